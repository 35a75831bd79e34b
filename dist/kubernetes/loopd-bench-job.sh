#!/bin/sh
# Runs the Indexed Job of loopd-bench-job.yaml as one load-test run: gives its pods a shared
# start, applies it, and collects each segment's JSON report for `loopd-bench merge`.
#
#   loopd-bench-job.sh render        the manifest with "START_AT" replaced by a time LEAD
#                                    seconds ahead (RFC 3339, UTC), on standard output
#   loopd-bench-job.sh apply         the same, applied with `kubectl apply -f -`
#   loopd-bench-job.sh collect DIR   waits for the Job to end, then writes each pod's report
#                                    to DIR/segment-I.json (I: the pod's completion index)
#   loopd-bench-job.sh extract       the report in a pod's log (standard input)
#
# LEAD (default 60) must cover scheduling the pods and pulling the image: a pod that starts
# after the start plus its warm-up refuses to run, and `merge` then names its segment as
# missing. Raise it on a cluster that has to pull the image. MANIFEST and KUBECTL override the
# manifest beside this script and the kubectl on the PATH.
set -eu

here=$(dirname "$0")
manifest=${MANIFEST:-$here/loopd-bench-job.yaml}
lead=${LEAD:-60}
kubectl=${KUBECTL:-kubectl}
job=loopd-bench

# The start: now plus the lead, in whole seconds (GNU date, or BSD date on macOS).
start_time() {
    epoch=$(($(date +%s) + lead))
    date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null ||
        date -u -r "$epoch" +%Y-%m-%dT%H:%M:%SZ
}

render() {
    if ! grep -q '"START_AT"' "$manifest"; then
        echo "$0: $manifest has no \"START_AT\" to replace" >&2
        exit 1
    fi
    sed "s/\"START_AT\"/\"$(start_time)\"/" "$manifest"
}

# A pod's log holds its standard output and standard error interleaved. loopd-bench writes the
# report to standard output as indented JSON, whose only lines that are exactly "{" and "}"
# open and close it; warnings and errors on standard error are single lines that start
# otherwise, so they stay out.
extract() {
    sed -n '/^{$/,/^}$/p'
}

collect() {
    dir=$1
    mkdir -p "$dir"
    echo "waiting for job/$job to complete or fail" >&2
    until $kubectl get job "$job" \
        -o jsonpath='{.status.conditions[?(@.status=="True")].type}' |
        grep -Eq 'Complete|Failed'; do
        sleep 5
    done
    $kubectl get pods -l job-name="$job" -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.annotations.batch\.kubernetes\.io/job-completion-index}{"\n"}{end}' |
        while read -r pod index; do
            out=$dir/segment-$index.json
            $kubectl logs "$pod" | extract >"$out"
            if [ -s "$out" ]; then
                echo "$out" >&2
            else
                rm -f "$out"
                echo "segment $index: no report in its log (kubectl logs $pod)" >&2
            fi
        done
}

case ${1:-} in
render) render ;;
apply) render | $kubectl apply -f - ;;
collect)
    [ $# -eq 2 ] || { echo "usage: $0 collect DIR" >&2; exit 2; }
    collect "$2"
    ;;
extract) extract ;;
*)
    echo "usage: $0 render|apply|collect DIR|extract" >&2
    exit 2
    ;;
esac
