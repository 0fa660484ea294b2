# bash output paths. MODE: builtins | coreutils | all. LOGFILE is the tap file.
mode=${1:-all}
builtins() {
    i=0
    while [ $i -lt 100 ]; do
        echo "builtin echo $i"
        printf 'builtin printf %d %s\n' "$i" "x"
        echo "echo to stderr $i" >&2
        echo "appended $i" >> "$LOGFILE"
        i=$((i + 1))
    done
    exec 3>>"$LOGFILE"
    echo "via fd 3" >&3
    printf 'printf via fd 3 %s\n' ok >&3
    exec 3>&-
    { echo "group to log"; echo "group err" >&2; } >> "$LOGFILE"
    echo -n "no newline"
    echo
}
coreutils() {
    /bin/echo "coreutils echo"
    /usr/bin/printf 'coreutils printf %d\n' 42
    /bin/echo "coreutils echo to stderr" >&2
    seq 1 20000
    printf 'file content line\n%.0s' 1 2 3 > in.txt
    cat in.txt
    cat in.txt >&2
    cat in.txt >> "$LOGFILE"
    /bin/echo "echo into log" >> "$LOGFILE"
}
case $mode in
builtins) builtins ;;
coreutils) coreutils ;;
all) builtins; coreutils; echo "done" ;;
esac
