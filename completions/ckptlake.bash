# ckptlake shell completion, generated from the CLI's command tree.
# Do not edit: regenerate with `python -m ckptlake.cli.completions --write completions/`.
# Static: completing never runs Python.  Install: source it from ~/.bashrc, or copy it to /usr/share/bash-completion/completions/ckptlake.

_ckptlake_files() {
    local IFS=$'\n'
    compopt -o filenames 2>/dev/null
    COMPREPLY=( $(compgen -f -- "$1") )
}

_ckptlake_dirs() {
    local IFS=$'\n'
    compopt -o filenames 2>/dev/null
    COMPREPLY=( $(compgen -d -- "$1") )
}

# Sets npos to the number of positional words between the subcommand and the cursor,
# skipping options and the values of the options listed in $1.
_ckptlake_npos() {
    local valued=" $1 " w i skip=0
    npos=0
    for (( i = cmd_index + 1; i < COMP_CWORD; i++ )); do
        w="${COMP_WORDS[i]}"
        if [[ "$w" == "=" ]]; then skip=1; continue; fi
        if (( skip )); then skip=0; continue; fi
        case "$w" in
            --) (( npos += COMP_CWORD - i - 1 )); return ;;
            --*=*) ;;
            -*) [[ "$valued" == *" $w "* ]] && skip=1 ;;
            *) (( npos++ )) ;;
        esac
    done
}

_ckptlake() {
    local cur prev cmd npos i
    local -i cmd_index=0
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev=""
    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    # --opt=value is split at '=' by COMP_WORDBREAKS: complete the value of --opt
    if [[ "$cur" == "=" ]]; then prev="${COMP_WORDS[COMP_CWORD-1]}"; cur="";
    elif [[ "$prev" == "=" ]] && (( COMP_CWORD > 1 )); then
        prev="${COMP_WORDS[COMP_CWORD-2]}"
    fi
    cmd=""
    for (( i = 1; i < COMP_CWORD; i++ )); do
        case "${COMP_WORDS[i]}" in
            push|pull|ls|alias|show|cat|lineage|diff|watch|gc|verify|cache) cmd="${COMP_WORDS[i]}"; cmd_index=i; break ;;
        esac
    done
    case "$cmd" in
        "")
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--version --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
            else
                COMPREPLY=( $(compgen -W "push pull ls alias show cat lineage diff watch gc verify cache" -- "$cur") )
            fi
            ;;
        push)
            case "$prev" in
                --meta-file|--config) _ckptlake_files "$cur"; return 0 ;;
                --step|--metric|--meta|--alias|--exclude|--parent|--relation|--input|--shard|--chunk-size|--concurrency|--max-bandwidth|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--step --metric --meta --alias --exclude --follow-symlinks --parent --relation --input --meta-file --shard --chunk-size --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--step --metric --meta --alias --exclude --parent --relation --input --meta-file --shard --chunk-size --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_files "$cur" ;;  # SOURCE
            esac
            ;;
        pull)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --include|--exclude|--reference|--concurrency|--max-bandwidth|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--include --exclude --force --estimate --yes -y --reference --no-cache --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--include --exclude --reference --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                1) _ckptlake_files "$cur" ;;  # DEST
            esac
            ;;
        ls)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --where|--sort|--limit|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--pending --where --sort --limit --tree --all -a --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            ;;
        alias)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            ;;
        show)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            ;;
        cat)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--lake -l --endpoint-url --profile --region --config --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            ;;
        lineage)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --depth|--format|-f|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--up --down --both --depth --format -f --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            ;;
        diff)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--values --inspect --estimate --yes -y --exit-code --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            ;;
        watch)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --pattern|--step-regex|--marker|--settle|--drain|--keep-local|--poll|--chunk-size|--concurrency|--max-bandwidth|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--pattern --step-regex --marker --settle --drain --keep-local --poll --once --chunk-size --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--pattern --step-regex --marker --settle --drain --keep-local --poll --chunk-size --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_dirs "$cur" ;;  # DIR
            esac
            ;;
        gc)
            case "$prev" in
                --policy|--config) _ckptlake_files "$cur"; return 0 ;;
                --match|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--dry-run --yes -y --policy --match --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            ;;
        verify)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --read-data-subset|--seed|--concurrency|--max-bandwidth|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--read-data --read-data-subset --seed --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            ;;
        cache)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --dir) _ckptlake_dirs "$cur"; return 0 ;;
                --max-size) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--max-size --all --dry-run --dir --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            ;;
    esac
    return 0
}

complete -F _ckptlake ckptlake
