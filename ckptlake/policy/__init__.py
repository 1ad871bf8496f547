"""User configuration and policies (retention, egress) that shape what the lake operations do."""
