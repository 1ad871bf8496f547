# ckptlake shell completion, generated from the CLI's command tree.
# Do not edit: regenerate with `python -m ckptlake.cli.completions --write completions/`.
# Commands, options and fixed values (cache ls|prune, --format, ...) are
# static; artifact names, aliases, @vN/@step=N and the paths in a version come
# from the lake (`ckptlake __complete`: cached, time-boxed).
# Install: source it from ~/.bashrc, or copy it to /usr/share/bash-completion/completions/ckptlake.

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

# Artifact names, aliases and selectors ($1: ref or artifact), or the paths in the version
# $ref names ($1: path), or the aliases of its artifact ($1: alias), from the lake
# (_ckptlake_npos sets ref).  The word, and the words
# handed to __complete, come from COMP_LINE split at blanks: COMP_WORDS splits
# art@step=N at '@' and '=', and --lake file:///x at ':' (the lake would be 'file').
# Readline replaces only what follows the word's last COMP_WORDBREAKS character, that
# character included if it is '@' or '$' (rl_special_prefixes): the rest is cut off
# the candidates, so that what bash keeps is kept.
_ckptlake_lake() {
    local word="$2" keep="" c j
    local breaks=$' \t\n"\'@><=;|&(:'  # bash's default COMP_WORDBREAKS
    [[ -n "${COMP_WORDBREAKS+set}" ]] && breaks="$COMP_WORDBREAKS"
    local -a extra=() words=( "${COMP_WORDS[@]}" )
    if [[ "$1" == path || "$1" == alias ]]; then
        [[ -n "${ref-}" ]] || return 0
        extra=( "$ref" )
    fi
    if [[ -n "${COMP_LINE-}" ]]; then
        word="${COMP_LINE:0:COMP_POINT}"
        word="${word##*[[:space:]]}"
        read -ra words <<< "$COMP_LINE"
    fi
    for (( j = ${#word} - 1; j >= 0; j-- )); do
        c="${word:j:1}"
        if [[ "$breaks" == *"$c"* ]]; then
            case "$c" in
                @|\$) keep="${word:0:j}" ;;
                *) keep="${word:0:j+1}" ;;
            esac
            break
        fi
    done
    local IFS=$'\n'
    COMPREPLY=( $("${COMP_WORDS[0]}" __complete "$1" "$word" "${extra[@]}" -- "${words[@]}" 2>/dev/null) )
    COMPREPLY=( "${COMPREPLY[@]#"$keep"}" )
    if (( ${#COMPREPLY[@]} == 1 )) && [[ "${COMPREPLY[0]}" == */ ]]; then
        compopt -o nospace 2>/dev/null
    fi
}

# Sets npos to the number of positional words between the subcommand and the cursor,
# skipping options and the values of the options listed in $1, and ref to the first.
# Words come from COMP_LINE split at blanks: COMP_WORDS splits art@step=N at '@' and '='.
_ckptlake_npos() {
    local valued=" $1 " w i skip=0 start=0 cword
    local -a words
    if [[ -n "${COMP_LINE-}" ]]; then
        read -ra words <<< "${COMP_LINE:0:COMP_POINT}"
        [[ "${COMP_LINE:0:COMP_POINT}" == *[[:space:]] ]] && words+=("")
    else
        words=( "${COMP_WORDS[@]:0:COMP_CWORD+1}" )
    fi
    cword=$(( ${#words[@]} - 1 ))
    for (( i = 1; i < cword; i++ )); do
        if [[ "${words[i]}" == "$cmd" ]]; then start=$i; break; fi
    done
    npos=0 ref=""
    for (( i = start + 1; i < cword; i++ )); do
        w="${words[i]}"
        if [[ "$w" == "=" ]]; then skip=1; continue; fi
        if (( skip )); then skip=0; continue; fi
        case "$w" in
            --) (( npos == 0 && i + 1 < cword )) && ref="${words[i+1]}"
                (( npos += cword - i - 1 )); return ;;
            --*=*) ;;
            -*) [[ "$valued" == *" $w "* ]] && skip=1 ;;
            *) (( npos == 0 )) && ref="$w"; (( npos++ )) ;;
        esac
    done
}

_ckptlake() {
    local cur prev cmd npos ref i
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
            push|pull|cp|ls|alias|show|cat|lineage|diff|watch|gc|rm|du|verify|cache|replicate|completion) cmd="${COMP_WORDS[i]}"; cmd_index=i; break ;;
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
                COMPREPLY=( $(compgen -W "push pull cp ls alias show cat lineage diff watch gc rm du verify cache replicate completion" -- "$cur") )
            fi
            ;;
        push)
            case "$prev" in
                --relation) COMPREPLY=( $(compgen -W "derived-from resumed-from fine-tuned-from evaluated-from" -- "$cur") ); return 0 ;;
                --compression) COMPREPLY=( $(compgen -W "auto none" -- "$cur") ); return 0 ;;
                --hash) COMPREPLY=( $(compgen -W "sha256 blake3" -- "$cur") ); return 0 ;;
                --meta-file|--config) _ckptlake_files "$cur"; return 0 ;;
                --step|--metric|--meta|--alias|--exclude|--parent|--input|--shard|--save-id|--chunk-size|--concurrency|--max-bandwidth|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--step --metric --meta --alias --exclude --follow-symlinks --parent --relation --input --meta-file --shard --save-id --chunk-size --compression --hash --dry-run --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--step --metric --meta --alias --exclude --parent --relation --input --meta-file --shard --save-id --chunk-size --compression --hash --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_files "$cur" ;;  # SOURCE
                1) _ckptlake_lake artifact "$cur" ;;  # ARTIFACT
            esac
            ;;
        pull)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --include|--exclude) _ckptlake_npos "--include --exclude --reference --replica --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config"; _ckptlake_lake path "$cur"; return 0 ;;
                --reference|--replica|--concurrency|--max-bandwidth|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--include --exclude --force --estimate --yes -y --reference --no-cache --replica --offline-replica --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--include --exclude --reference --replica --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # REF
                1) _ckptlake_files "$cur" ;;  # DEST
                *) _ckptlake_lake path "$cur" ;;  # [PATH]...
            esac
            ;;
        cp)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --to|--as|--alias|--to-endpoint-url|--to-profile|--to-region|--concurrency|--max-bandwidth|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--to --as --alias --to-endpoint-url --to-profile --to-region --estimate --yes -y --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--to --as --alias --to-endpoint-url --to-profile --to-region --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # REF
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
            _ckptlake_npos "--where --sort --limit --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # ARTIFACT|REF
                1) _ckptlake_lake path "$cur" ;;  # PATH
            esac
            ;;
        alias)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--delete -d --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # REF
                1) _ckptlake_lake alias "$cur" ;;  # NAME
            esac
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
            _ckptlake_npos "--lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # REF
            esac
            ;;
        cat)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --replica|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--replica --yes -y --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--replica --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # REF
                1) _ckptlake_lake path "$cur" ;;  # PATH
            esac
            ;;
        lineage)
            case "$prev" in
                --format|-f) COMPREPLY=( $(compgen -W "tree json dot mermaid" -- "$cur") ); return 0 ;;
                --config) _ckptlake_files "$cur"; return 0 ;;
                --depth|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--up --down --both --depth --format -f --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--depth --format -f --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # REF
            esac
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
            _ckptlake_npos "--lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # A
                1) _ckptlake_lake ref "$cur" ;;  # B
            esac
            ;;
        watch)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --pattern|--step-regex|--marker|--settle|--drain|--keep-local|--poll|--exclude|--chunk-size|--concurrency|--max-bandwidth|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--pattern --step-regex --marker --settle --drain --keep-local --poll --exclude --follow-symlinks --once --chunk-size --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--pattern --step-regex --marker --settle --drain --keep-local --poll --exclude --chunk-size --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_dirs "$cur" ;;  # DIR
                1) _ckptlake_lake artifact "$cur" ;;  # ARTIFACT
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
        rm)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --reason|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--reason --dry-run --yes -y --all --pending --force --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--reason --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # REF
            esac
            ;;
        du)
            case "$prev" in
                --sort) COMPREPLY=( $(compgen -W "stored exclusive logical name" -- "$cur") ); return 0 ;;
                --config) _ckptlake_files "$cur"; return 0 ;;
                --lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--versions --sort --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--sort --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake artifact "$cur" ;;  # PREFIX
            esac
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
            _ckptlake_npos "--read-data-subset --seed --concurrency --max-bandwidth --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # ARTIFACT|REF
            esac
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
            _ckptlake_npos "--max-size --dir --config"
            case "$npos" in
                0) COMPREPLY=( $(compgen -W "ls prune" -- "$cur") ) ;;  # ACTION
            esac
            ;;
        replicate)
            case "$prev" in
                --config) _ckptlake_files "$cur"; return 0 ;;
                --to|--concurrency|--lake|-l|--endpoint-url|--profile|--region) return 0 ;;  # free-form value
            esac
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--to --verify --concurrency --lake -l --endpoint-url --profile --region --config --json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos "--to --concurrency --lake -l --endpoint-url --profile --region --config"
            case "$npos" in
                0) _ckptlake_lake ref "$cur" ;;  # REF
            esac
            ;;
        completion)
            if [[ "$cur" == -* ]]; then
                COMPREPLY=( $(compgen -W "--json --quiet -q --debug --help -h" -- "$cur") )
                return 0
            fi
            _ckptlake_npos ""
            case "$npos" in
                0) COMPREPLY=( $(compgen -W "bash zsh fish" -- "$cur") ) ;;  # SHELL
            esac
            ;;
    esac
    return 0
}

complete -F _ckptlake ckptlake
