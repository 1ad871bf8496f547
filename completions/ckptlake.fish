# ckptlake shell completion, generated from the CLI's command tree.
# Do not edit: regenerate with `python -m ckptlake.cli.completions --write completions/`.
# Commands, options and fixed values (cache ls|prune, --format, ...) are
# static; artifact names, aliases, @vN/@step=N and the paths in a version come
# from the lake (`ckptlake __complete`: cached, time-boxed).
# Install: copy it to ~/.config/fish/completions/ckptlake.fish.

complete -c ckptlake -f

# Artifact names, aliases and selectors ($argv[1]: ref or artifact) from the lake, or
# ($argv[1]: path) the paths in the version the first positional names, or ($argv[1]:
# alias) the aliases of its artifact; $argv[2..] are then the subcommand's options
# that take a value.
function __ckptlake_lake
    set -l tokens (commandline -opc)
    if contains -- $argv[1] path alias
        set -l ref (__ckptlake_positional $argv[2..-1])[1]
        test -n "$ref"; or return 0
        ckptlake __complete $argv[1] (commandline -ct) $ref -- $tokens 2>/dev/null
        return 0
    end
    ckptlake __complete $argv[1] (commandline -ct) -- $tokens 2>/dev/null
end

# Whether the subcommand is $argv[1] (no argument: whether one is typed yet): the first
# word after ckptlake that is neither an option nor the value of one.  Not
# __fish_seen_subcommand_from: `ckptlake cache ls` is cache's, not ls's.
function __ckptlake_using
    set -l skip 0
    for t in (commandline -opc)[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        switch $t
            case '--*=*'
            case '-*'
                contains -- $t --lake -l --endpoint-url --profile --region --config; and set skip 1
            case '*'
                set -q argv[1]; or return 0
                test $t = $argv[1]
                return
        end
    end
    return 1
end

# The positional words after the subcommand, one per line; $argv: the subcommand's
# options that take a value.
function __ckptlake_positional
    set -l skip 0
    set -l seen 0
    for t in (commandline -opc)[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        switch $t
            case '--*=*'
            case '-*'
                if test $seen = 0
                    contains -- $t --lake -l --endpoint-url --profile --region --config; and set skip 1
                else
                    contains -- $t $argv; and set skip 1
                end
            case '*'
                if test $seen = 0
                    set seen 1
                else
                    echo $t
                end
        end
    end
end

# Whether the word being typed is positional number $argv[1] (from 0; N+ for N or
# later) after the subcommand; $argv[2..] are the subcommand's options that take a value.
function __ckptlake_arg
    set -l want $argv[1]
    set -l n (count (__ckptlake_positional $argv[2..-1]))
    string match -q -- '-*' (commandline -ct); and return 1
    if string match -q -- '*+' $want
        test $n -ge (string trim -r -c + -- $want)
    else
        test $n = $want
    end
end

complete -c ckptlake -n 'not __ckptlake_using' -l version -d 'Print the version and exit'
complete -c ckptlake -n 'not __ckptlake_using' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n 'not __ckptlake_using' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n 'not __ckptlake_using' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n 'not __ckptlake_using' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n 'not __ckptlake_using' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n 'not __ckptlake_using' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n 'not __ckptlake_using' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n 'not __ckptlake_using' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n 'not __ckptlake_using' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n 'not __ckptlake_using' -a 'push' -d 'Upload SOURCE (a file or a directory) as the next version of ARTIFACT'
complete -c ckptlake -n 'not __ckptlake_using' -a 'pull' -d 'Restore the version REF resolves to into DEST, verifying every byte'
complete -c ckptlake -n 'not __ckptlake_using' -a 'cp' -d 'Copy the version REF into another lake (--to) or under another artifact name (--as), as its next version, with its step, metrics, metadata and provenance'
complete -c ckptlake -n 'not __ckptlake_using' -a 'ls' -d 'List the artifacts of the lake (or those under PREFIX/), the versions of ARTIFACT, or the files of the version REF (ARTIFACT@SELECTOR)'
complete -c ckptlake -n 'not __ckptlake_using' -a 'alias' -d 'Point alias NAME of the artifact at the version REF resolves to'
complete -c ckptlake -n 'not __ckptlake_using' -a 'show' -d 'Show everything about the version REF: files, totals, step, metrics, metadata, provenance, aliases, parents, inputs and children'
complete -c ckptlake -n 'not __ckptlake_using' -a 'cat' -d 'Write the file PATH of the version REF to stdout, verifying every chunk before it is written'
complete -c ckptlake -n 'not __ckptlake_using' -a 'lineage' -d 'Show where the version REF came from (--up, the default), what was made from it (--down), or both'
complete -c ckptlake -n 'not __ckptlake_using' -a 'diff' -d 'Compare version A with version B (of one artifact or of two): step, metrics, metadata, files, bytes shared, and tensors of .safetensors files'
complete -c ckptlake -n 'not __ckptlake_using' -a 'watch' -d 'Watch DIR and push each new complete checkpoint in it to ARTIFACT, in step order'
complete -c ckptlake -n 'not __ckptlake_using' -a 'gc' -d 'Delete the versions the retention policy no longer keeps, and the chunks nothing references any more'
complete -c ckptlake -n 'not __ckptlake_using' -a 'rm' -d 'Delete one version of an artifact (or, with --all, every version of it): it cannot be read any more, at once'
complete -c ckptlake -n 'not __ckptlake_using' -a 'du' -d 'Show what each artifact (and with --versions each version) stores: logical, stored, exclusive and shared bytes, and their monthly cost'
complete -c ckptlake -n 'not __ckptlake_using' -a 'verify' -d 'Check that versions can be restored: the lake header, every manifest, that every chunk they reference exists with the right size, aliases, shard steps and gc\'s records'
complete -c ckptlake -n 'not __ckptlake_using' -a 'cache' -d 'Show or trim the local chunk cache that pulls read through'
complete -c ckptlake -n 'not __ckptlake_using' -a 'replicate' -d 'Copy the chunks of the version REF that the replica NAME lacks, so that pulls in its region read them there'
complete -c ckptlake -n 'not __ckptlake_using' -a 'completion' -d 'Print the shell completion script for SHELL (bash, zsh or fish) on stdout'

# push SOURCE ARTIFACT
complete -c ckptlake -n '__ckptlake_using push' -l step -x -d 'Training step of this checkpoint (integer >= 0); select it later with @step=N'
complete -c ckptlake -n '__ckptlake_using push' -l metric -x -d 'Numeric metric to record, e.g. loss=2.31 (repeatable)'
complete -c ckptlake -n '__ckptlake_using push' -l meta -x -d 'Free-form string metadata, e.g. git=abc123 (repeatable)'
complete -c ckptlake -n '__ckptlake_using push' -l alias -x -d 'Point alias NAME at the new version (repeatable)'
complete -c ckptlake -n '__ckptlake_using push' -l exclude -x -d 'Skip files matching GLOB, relative to SOURCE (repeatable)'
complete -c ckptlake -n '__ckptlake_using push' -l follow-symlinks -d 'Upload what symlinks point to instead of the links'
complete -c ckptlake -n '__ckptlake_using push' -l parent -x -d 'A version this one was made from (repeatable), fixed to its version number now; e.g'
complete -c ckptlake -n '__ckptlake_using push' -l relation -x -a 'derived-from resumed-from fine-tuned-from evaluated-from' -d 'Relation of --parent without a :RELATION suffix: derived-from (default), resumed-from, fine-tuned-from or evaluated-from'
complete -c ckptlake -n '__ckptlake_using push' -l input -x -d 'A dataset or other input this version was made from (repeatable), e.g'
complete -c ckptlake -n '__ckptlake_using push' -l meta-file -r -F -d 'JSON or YAML mapping to record as metadata, e.g'
complete -c ckptlake -n '__ckptlake_using push' -l shard -x -d 'Push rank RANK\'s files of a checkpoint written by WORLD ranks (needs --step); the version is committed once, when all WORLD ranks are in'
complete -c ckptlake -n '__ckptlake_using push' -l save-id -x -d 'With --shard: an id the same on every rank of one save and new for each attempt, so that a re-run never commits a crashed save\'s leftover shards with its own (the scheduler\'s job id and attempt number, say)'
complete -c ckptlake -n '__ckptlake_using push' -l chunk-size -x -d 'Chunk size for upload and dedup, e.g. 16MiB (default: from the config)'
complete -c ckptlake -n '__ckptlake_using push' -l compression -x -a 'auto none' -d 'Store chunks compressed where that saves bytes (auto) or raw (none); default: the lake\'s setting (auto for new lakes, none for lakes made before compression)'
complete -c ckptlake -n '__ckptlake_using push' -l hash -x -a 'sha256 blake3' -d 'Chunk hash of the lake this push creates (default blake3, which hashes ~5x faster; sha256 where SHA-256 keys are required)'
complete -c ckptlake -n '__ckptlake_using push' -l dry-run -d 'Read and hash SOURCE, look each chunk up in the lake and say what the push would upload (after compression) and which version it would be; write nothing'
complete -c ckptlake -n '__ckptlake_using push' -l concurrency -x -d 'Parallel transfers (default: from the config, else the library\'s default)'
complete -c ckptlake -n '__ckptlake_using push' -l max-bandwidth -x -d 'Limit transfer speed to SIZE per second for the whole process, e.g. 50MiB'
complete -c ckptlake -n '__ckptlake_using push' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using push' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using push' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using push' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using push' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using push' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using push' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using push' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using push' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using push' -F
complete -c ckptlake -n '__ckptlake_using push; and __ckptlake_arg 1 --step --metric --meta --alias --exclude --parent --relation --input --meta-file --shard --save-id --chunk-size --compression --hash --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake artifact)' -d 'ARTIFACT'

# pull REF DEST [PATH]...
complete -c ckptlake -n '__ckptlake_using pull' -l include -x -a '(__ckptlake_lake path --include --exclude --reference --replica --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config)' -d 'Pull only files matching GLOB (repeatable; adds to any PATHs)'
complete -c ckptlake -n '__ckptlake_using pull' -l exclude -x -a '(__ckptlake_lake path --include --exclude --reference --replica --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config)' -d 'Leave out files matching GLOB (repeatable; wins over PATH and --include)'
complete -c ckptlake -n '__ckptlake_using pull' -l force -d 'Overwrite files at DEST that differ from the version'
complete -c ckptlake -n '__ckptlake_using pull' -l estimate -d 'Print what the pull would download and cost (egress); download nothing'
complete -c ckptlake -n '__ckptlake_using pull' -s y -l yes -d 'Accept an egress cost above egress.confirm_above_usd without asking'
complete -c ckptlake -n '__ckptlake_using pull' -l reference -x -d 'A directory holding an earlier copy (repeatable): chunks found there are copied, not downloaded'
complete -c ckptlake -n '__ckptlake_using pull' -l no-cache -d 'Neither read nor fill the local chunk cache'
complete -c ckptlake -n '__ckptlake_using pull' -l replica -x -d 'Read chunks through this regional replica (replicas: in ckptlake.yaml), or \'none\' for the lake itself (default: the replica in the client\'s region, if any)'
complete -c ckptlake -n '__ckptlake_using pull' -l offline-replica -d 'If the lake cannot be reached, serve the version from the replica as it holds it (saying so)'
complete -c ckptlake -n '__ckptlake_using pull' -l concurrency -x -d 'Parallel transfers (default: from the config, else the library\'s default)'
complete -c ckptlake -n '__ckptlake_using pull' -l max-bandwidth -x -d 'Limit transfer speed to SIZE per second for the whole process, e.g. 50MiB'
complete -c ckptlake -n '__ckptlake_using pull' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using pull' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using pull' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using pull' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using pull' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using pull' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using pull' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using pull' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using pull' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using pull' -F
complete -c ckptlake -n '__ckptlake_using pull; and __ckptlake_arg 0 --include --exclude --reference --replica --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'REF'
complete -c ckptlake -n '__ckptlake_using pull; and __ckptlake_arg 2+ --include --exclude --reference --replica --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake path --include --exclude --reference --replica --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config)' -d '[PATH]...'

# cp REF
complete -c ckptlake -n '__ckptlake_using cp' -l to -x -d 'The lake to copy into (s3://bucket/prefix or file:///path); default: this lake'
complete -c ckptlake -n '__ckptlake_using cp' -l as -x -d 'The artifact to copy it to; default: the same name'
complete -c ckptlake -n '__ckptlake_using cp' -l alias -x -d 'Point alias NAME at the new version (repeatable)'
complete -c ckptlake -n '__ckptlake_using cp' -l to-endpoint-url -x -d 'S3 endpoint of the destination lake (default: --endpoint-url)'
complete -c ckptlake -n '__ckptlake_using cp' -l to-profile -x -d 'AWS credentials profile for the destination (default: --profile)'
complete -c ckptlake -n '__ckptlake_using cp' -l to-region -x -d 'Region of the destination bucket (default: --region)'
complete -c ckptlake -n '__ckptlake_using cp' -l estimate -d 'Print what the copy would read from the lake and cost (egress); copy nothing'
complete -c ckptlake -n '__ckptlake_using cp' -s y -l yes -d 'Accept an egress cost above egress.confirm_above_usd without asking'
complete -c ckptlake -n '__ckptlake_using cp' -l concurrency -x -d 'Parallel transfers (default: from the config, else the library\'s default)'
complete -c ckptlake -n '__ckptlake_using cp' -l max-bandwidth -x -d 'Limit transfer speed to SIZE per second for the whole process, e.g. 50MiB'
complete -c ckptlake -n '__ckptlake_using cp' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using cp' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using cp' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using cp' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using cp' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using cp' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using cp' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using cp' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using cp' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using cp; and __ckptlake_arg 0 --to --as --alias --to-endpoint-url --to-profile --to-region --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'REF'

# ls ARTIFACT|REF PATH
complete -c ckptlake -n '__ckptlake_using ls' -l pending -d 'List sharded steps not committed yet (of ARTIFACT, or of all artifacts): how many of WORLD ranks are in, and why not committed'
complete -c ckptlake -n '__ckptlake_using ls' -l where -x -d 'Keep versions matching COND, e.g'
complete -c ckptlake -n '__ckptlake_using ls' -l sort -x -d 'Sort versions by a metric (or step, version, size); -KEY or KEY:desc for descending'
complete -c ckptlake -n '__ckptlake_using ls' -l limit -x -d 'Show at most N versions (the first N after --sort, else the newest N)'
complete -c ckptlake -n '__ckptlake_using ls' -l tree -d 'With REF: show the files as an indented tree, directories with the total size below them'
complete -c ckptlake -n '__ckptlake_using ls' -s a -l all -d 'Also show versions deleted (by gc or rm), as expired (with ARTIFACT), or how many each artifact lost (without)'
complete -c ckptlake -n '__ckptlake_using ls' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using ls' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using ls' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using ls' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using ls' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using ls' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using ls' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using ls' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using ls' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using ls; and __ckptlake_arg 0 --where --sort --limit --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'ARTIFACT|REF'
complete -c ckptlake -n '__ckptlake_using ls; and __ckptlake_arg 1 --where --sort --limit --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake path --where --sort --limit --lake -l --endpoint-url --profile --region --config)' -d 'PATH'

# alias REF NAME
complete -c ckptlake -n '__ckptlake_using alias' -s d -l delete -d 'Remove alias NAME of the artifact REF (no @SELECTOR) instead; exit 3 if it has no such alias'
complete -c ckptlake -n '__ckptlake_using alias' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using alias' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using alias' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using alias' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using alias' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using alias' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using alias' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using alias' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using alias' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using alias; and __ckptlake_arg 0 --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'REF'
complete -c ckptlake -n '__ckptlake_using alias; and __ckptlake_arg 1 --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake alias --lake -l --endpoint-url --profile --region --config)' -d 'NAME'

# show REF
complete -c ckptlake -n '__ckptlake_using show' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using show' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using show' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using show' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using show' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using show' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using show' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using show' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using show' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using show; and __ckptlake_arg 0 --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'REF'

# cat REF PATH
complete -c ckptlake -n '__ckptlake_using cat' -l replica -x -d 'Read chunks through this regional replica (replicas: in ckptlake.yaml), or \'none\' for the lake itself (default: the replica in the client\'s region, if any)'
complete -c ckptlake -n '__ckptlake_using cat' -s y -l yes -d 'Accept an egress cost above egress.confirm_above_usd without asking'
complete -c ckptlake -n '__ckptlake_using cat' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using cat' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using cat' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using cat' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using cat' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using cat' -l json -d 'Errors as a JSON document on stdout; on success stdout is still the file\'s bytes'
complete -c ckptlake -n '__ckptlake_using cat' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using cat' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using cat' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using cat; and __ckptlake_arg 0 --replica --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'REF'
complete -c ckptlake -n '__ckptlake_using cat; and __ckptlake_arg 1 --replica --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake path --replica --lake -l --endpoint-url --profile --region --config)' -d 'PATH'

# lineage REF
complete -c ckptlake -n '__ckptlake_using lineage' -l up -d 'Ancestors: parents, their parents, ... and inputs (the default)'
complete -c ckptlake -n '__ckptlake_using lineage' -l down -d 'Descendants: versions made from REF, and so on'
complete -c ckptlake -n '__ckptlake_using lineage' -l both -d 'Ancestors and descendants'
complete -c ckptlake -n '__ckptlake_using lineage' -l depth -x -d 'Follow at most N edges from REF (default: all)'
complete -c ckptlake -n '__ckptlake_using lineage' -s f -l format -x -a 'tree json dot mermaid' -d 'tree (default), json, dot (Graphviz) or mermaid'
complete -c ckptlake -n '__ckptlake_using lineage' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using lineage' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using lineage' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using lineage' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using lineage' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using lineage' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using lineage' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using lineage' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using lineage' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using lineage; and __ckptlake_arg 0 --depth --format -f --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'REF'

# diff A B
complete -c ckptlake -n '__ckptlake_using diff' -l values -d 'Download the changed tensors (only those) and compare their values'
complete -c ckptlake -n '__ckptlake_using diff' -l inspect -d 'Look inside modified files: safetensors metadata, torch archives\' storages and tensors (reads a few chunks per file)'
complete -c ckptlake -n '__ckptlake_using diff' -l estimate -d 'Print what --values would download and cost (egress); download nothing'
complete -c ckptlake -n '__ckptlake_using diff' -s y -l yes -d 'With --values/--inspect: accept an egress cost above egress.confirm_above_usd without asking'
complete -c ckptlake -n '__ckptlake_using diff' -l exit-code -d 'Exit with 1 if the versions differ, 0 if not (like git diff --exit-code)'
complete -c ckptlake -n '__ckptlake_using diff' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using diff' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using diff' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using diff' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using diff' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using diff' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using diff' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using diff' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using diff' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using diff; and __ckptlake_arg 0 --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'A'
complete -c ckptlake -n '__ckptlake_using diff; and __ckptlake_arg 1 --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'B'

# watch DIR ARTIFACT
complete -c ckptlake -n '__ckptlake_using watch' -l pattern -x -d 'Names of checkpoint entries in DIR'
complete -c ckptlake -n '__ckptlake_using watch' -l step-regex -x -d 'Regular expression whose first group is the step'
complete -c ckptlake -n '__ckptlake_using watch' -l marker -x -d 'File whose presence inside a checkpoint directory marks it complete'
complete -c ckptlake -n '__ckptlake_using watch' -l settle -x -d 'Without --marker: complete once unchanged for this long'
complete -c ckptlake -n '__ckptlake_using watch' -l drain -x -d 'On SIGTERM/SIGINT, wait this long for the upload under way, then abandon it'
complete -c ckptlake -n '__ckptlake_using watch' -l keep-local -x -d 'Delete pushed local checkpoints beyond the newest N'
complete -c ckptlake -n '__ckptlake_using watch' -l poll -x -d 'How often to look at DIR'
complete -c ckptlake -n '__ckptlake_using watch' -l exclude -x -d 'Skip files matching GLOB, relative to each checkpoint (repeatable)'
complete -c ckptlake -n '__ckptlake_using watch' -l follow-symlinks -d 'Upload what symlinks inside a checkpoint point to instead of the links'
complete -c ckptlake -n '__ckptlake_using watch' -l once -d 'Push what is complete now, then exit (for cron and scripts)'
complete -c ckptlake -n '__ckptlake_using watch' -l chunk-size -x -d 'Chunk size for upload and dedup, e.g. 16MiB (default: from the config)'
complete -c ckptlake -n '__ckptlake_using watch' -l concurrency -x -d 'Parallel transfers (default: from the config, else the library\'s default)'
complete -c ckptlake -n '__ckptlake_using watch' -l max-bandwidth -x -d 'Limit transfer speed to SIZE per second for the whole process, e.g. 50MiB'
complete -c ckptlake -n '__ckptlake_using watch' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using watch' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using watch' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using watch' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using watch' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using watch' -l json -d 'Print one JSON document per line on stdout: one per pushed checkpoint (and the error\'s, for errors); warnings still on stderr; no progress, no notes'
complete -c ckptlake -n '__ckptlake_using watch' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using watch' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using watch' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using watch' -F
complete -c ckptlake -n '__ckptlake_using watch; and __ckptlake_arg 1 --pattern --step-regex --marker --settle --drain --keep-local --poll --exclude --chunk-size --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake artifact)' -d 'ARTIFACT'

# gc 
complete -c ckptlake -n '__ckptlake_using gc' -l dry-run -d 'Print the plan and change nothing'
complete -c ckptlake -n '__ckptlake_using gc' -s y -l yes -d 'Carry the plan out without asking'
complete -c ckptlake -n '__ckptlake_using gc' -l policy -r -F -d 'Read the retention: section from FILE instead of the config file'
complete -c ckptlake -n '__ckptlake_using gc' -l match -x -d 'Consider only artifacts matching GLOB (fnmatch, e.g'
complete -c ckptlake -n '__ckptlake_using gc' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using gc' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using gc' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using gc' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using gc' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using gc' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using gc' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using gc' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using gc' -s h -l help -d 'Show this message and exit'

# rm REF
complete -c ckptlake -n '__ckptlake_using rm' -l reason -x -d 'Why, kept in the version\'s tombstone and shown by every later read of it; one line (default: \'deleted by hand by USER@HOST\')'
complete -c ckptlake -n '__ckptlake_using rm' -l dry-run -d 'Say what would be deleted and change nothing'
complete -c ckptlake -n '__ckptlake_using rm' -s y -l yes -d 'Delete without asking'
complete -c ckptlake -n '__ckptlake_using rm' -l all -d 'Delete every version of the artifact REF (refused while an alias names one of them)'
complete -c ckptlake -n '__ckptlake_using rm' -l pending -d 'Discard the sharded step ARTIFACT@step=N that never committed (its shard records and claim), so it can be saved again'
complete -c ckptlake -n '__ckptlake_using rm' -l force -d 'With --pending: discard even though the step\'s newest shard record is younger than 5 minutes'
complete -c ckptlake -n '__ckptlake_using rm' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using rm' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using rm' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using rm' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using rm' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using rm' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using rm' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using rm' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using rm' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using rm; and __ckptlake_arg 0 --reason --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'REF'

# du PREFIX
complete -c ckptlake -n '__ckptlake_using du' -l versions -d 'Also one row per version (its exclusive bytes: chunks no other version references)'
complete -c ckptlake -n '__ckptlake_using du' -l sort -x -a 'stored exclusive logical name' -d 'stored, exclusive or logical (largest first), or name'
complete -c ckptlake -n '__ckptlake_using du' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using du' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using du' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using du' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using du' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using du' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using du' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using du' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using du' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using du; and __ckptlake_arg 0 --sort --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake artifact)' -d 'PREFIX'

# verify ARTIFACT|REF
complete -c ckptlake -n '__ckptlake_using verify' -l read-data -d 'Download and re-hash every referenced chunk once'
complete -c ckptlake -n '__ckptlake_using verify' -l read-data-subset -x -d 'Download and re-hash a reproducible subset of the chunks: N percent, or part N of M'
complete -c ckptlake -n '__ckptlake_using verify' -l seed -x -d 'Which subset --read-data-subset reads (default 0; the same seed, the same chunks)'
complete -c ckptlake -n '__ckptlake_using verify' -l concurrency -x -d 'Parallel transfers (default: from the config, else the library\'s default)'
complete -c ckptlake -n '__ckptlake_using verify' -l max-bandwidth -x -d 'Limit transfer speed to SIZE per second for the whole process, e.g. 50MiB'
complete -c ckptlake -n '__ckptlake_using verify' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using verify' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using verify' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using verify' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using verify' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using verify' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using verify' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using verify' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using verify' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using verify; and __ckptlake_arg 0 --read-data-subset --seed --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'ARTIFACT|REF'

# cache ACTION
complete -c ckptlake -n '__ckptlake_using cache' -l max-size -x -d 'prune: keep at most SIZE (e.g. 5GiB) instead of the cache\'s bound'
complete -c ckptlake -n '__ckptlake_using cache' -l all -d 'prune: delete every cached chunk'
complete -c ckptlake -n '__ckptlake_using cache' -l dry-run -d 'prune: say what would be deleted; delete nothing'
complete -c ckptlake -n '__ckptlake_using cache' -l dir -r -F -d 'The cache directory (default: $CKPTLAKE_CACHE, else cache: in the config)'
complete -c ckptlake -n '__ckptlake_using cache' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using cache' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using cache' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using cache' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using cache' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using cache; and __ckptlake_arg 0 --max-size --dir --config' -a 'ls prune' -d 'ACTION'

# replicate REF
complete -c ckptlake -n '__ckptlake_using replicate' -l to -x -d 'The replica to fill (a name from replicas: in ckptlake.yaml)'
complete -c ckptlake -n '__ckptlake_using replicate' -l verify -d 'Also read back and check the chunks already in the replica'
complete -c ckptlake -n '__ckptlake_using replicate' -l concurrency -x -d 'Parallel transfers (default: from the config, else the library\'s default)'
complete -c ckptlake -n '__ckptlake_using replicate' -s l -l lake -x -d 'Lake location (s3://bucket/prefix or file:///path)'
complete -c ckptlake -n '__ckptlake_using replicate' -l endpoint-url -x -d 'S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...)'
complete -c ckptlake -n '__ckptlake_using replicate' -l profile -x -d 'AWS credentials profile to use'
complete -c ckptlake -n '__ckptlake_using replicate' -l region -x -d 'Region of the bucket'
complete -c ckptlake -n '__ckptlake_using replicate' -l config -r -F -d 'Config file to read instead of the default search'
complete -c ckptlake -n '__ckptlake_using replicate' -l json -d 'Print exactly one JSON document on stdout (also for errors); no progress, no notes'
complete -c ckptlake -n '__ckptlake_using replicate' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using replicate' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using replicate' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using replicate; and __ckptlake_arg 0 --to --concurrency --lake -l --endpoint-url --profile --region --config' -a '(__ckptlake_lake ref)' -d 'REF'

# completion SHELL
complete -c ckptlake -n '__ckptlake_using completion' -l json -d 'Errors as a JSON document on stdout; on success stdout is still the script'
complete -c ckptlake -n '__ckptlake_using completion' -s q -l quiet -d 'Print nothing but errors'
complete -c ckptlake -n '__ckptlake_using completion' -l debug -d 'Print the traceback of errors on stderr'
complete -c ckptlake -n '__ckptlake_using completion' -s h -l help -d 'Show this message and exit'
complete -c ckptlake -n '__ckptlake_using completion; and __ckptlake_arg 0' -a 'bash zsh fish' -d 'SHELL'
