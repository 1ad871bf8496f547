# ckptlake shell completion, generated from the CLI's command tree.
# Do not edit: regenerate with `python -m ckptlake.cli.completions --write completions/`.
# Static: completing never runs Python.  Install: copy it to ~/.config/fish/completions/ckptlake.fish.

complete -c ckptlake -f

complete -c ckptlake -n '__fish_use_subcommand' -l version -d 'Print the version and exit'
complete -c ckptlake -n '__fish_use_subcommand' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__fish_use_subcommand' -a 'push' -d 'Upload SOURCE (a file or a directory) as the next version of ARTIFACT'
complete -c ckptlake -n '__fish_use_subcommand' -a 'pull' -d 'Restore the version REF resolves to into DEST, verifying every byte'
complete -c ckptlake -n '__fish_use_subcommand' -a 'ls' -d 'List the artifacts of the lake, or the versions of ARTIFACT'
complete -c ckptlake -n '__fish_use_subcommand' -a 'alias' -d 'Point alias NAME of the artifact at the version REF resolves to'

# push SOURCE ARTIFACT
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l step -x -d 'Training step of this checkpoint (integer >= 0); select it later with @step=N'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l metric -x -d 'Numeric metric to record, e.g. loss=2.31 (repeatable)'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l meta -x -d 'Free-form string metadata, e.g. git=abc123 (repeatable)'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l alias -x -d 'Point alias NAME at the new version (repeatable)'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l exclude -x -d 'Skip files matching GLOB, relative to SOURCE (repeatable)'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l follow-symlinks -d 'Upload what symlinks point to instead of the links'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l chunk-size -x -d 'Chunk size for upload and dedup, e.g. 16MiB (default: from the config)'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l concurrency -x -d 'Parallel transfers (default: from the config, else the library\'s default)'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l max-bandwidth -x -d 'Limit transfer speed to SIZE per second for the whole process, e.g. 50MiB'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__fish_seen_subcommand_from push' -F

# pull REF DEST
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -l force -d 'Overwrite files at DEST that differ from the version'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -l concurrency -x -d 'Parallel transfers (default: from the config, else the library\'s default)'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -l max-bandwidth -x -d 'Limit transfer speed to SIZE per second for the whole process, e.g. 50MiB'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__fish_seen_subcommand_from pull' -F

# ls ARTIFACT
complete -c ckptlake -n '__fish_seen_subcommand_from ls' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__fish_seen_subcommand_from ls' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__fish_seen_subcommand_from ls' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__fish_seen_subcommand_from ls' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__fish_seen_subcommand_from ls' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__fish_seen_subcommand_from ls' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__fish_seen_subcommand_from ls' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__fish_seen_subcommand_from ls' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__fish_seen_subcommand_from ls' -s h -l help -d 'Show this message and exit'

# alias REF NAME
complete -c ckptlake -n '__fish_seen_subcommand_from alias' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__fish_seen_subcommand_from alias' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__fish_seen_subcommand_from alias' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__fish_seen_subcommand_from alias' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__fish_seen_subcommand_from alias' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__fish_seen_subcommand_from alias' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__fish_seen_subcommand_from alias' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__fish_seen_subcommand_from alias' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__fish_seen_subcommand_from alias' -s h -l help -d 'Show this message and exit'
