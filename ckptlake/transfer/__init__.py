"""The transfer engine: bounded, pipelined chunk uploads and verified downloads."""
