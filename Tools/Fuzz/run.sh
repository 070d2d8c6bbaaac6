#!/usr/bin/env bash
# Builds the fuzz targets (libFuzzer + AddressSanitizer) and runs them one after another.
#   ./run.sh                    # every target, 600 s each
#   ./run.sh FuzzNPY 60         # one target, 60 s
# Crashing inputs land in FailCases/<target>/ (commit them: the test suite replays them);
# the growing corpus is kept in .corpus/<target>/, logs in .logs/.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=../..
TARGETS=(FuzzModelFile FuzzTorchCheckpoint FuzzSafetensors FuzzNPY FuzzPNG FuzzIDX FuzzConfigJSON FuzzModelMetadata)
[ $# -ge 1 ] && TARGETS=("$1")
SECONDS_EACH=${2:-600}

# Release build; dead stripping would drop the coverage counters' sections.
swift build -c release --disable-dead-strip -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
BIN=$(swift build -c release --disable-dead-strip -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --show-bin-path)

# Seeds: Seeds/<target> (small, committed; make_seeds.py regenerates them) plus the fixtures.
seeds() {
    case $1 in
        FuzzModelFile)
            local tiny=.corpus/tiny_uncond.tflow
            [ -f $tiny ] || (cd $ROOT && swift build --product tarflow >/dev/null && \
                .build/debug/tarflow convert Tests/Fixtures/tiny_uncond/model.safetensors -o Tools/Fuzz/$tiny --image-size 8 >/dev/null)
            echo Seeds/FuzzModelFile $tiny ;;
        FuzzTorchCheckpoint) echo Seeds/FuzzTorchCheckpoint ;;
        FuzzSafetensors) echo Seeds/FuzzSafetensors ;;
        FuzzNPY) echo $ROOT/Tests/Fixtures/io/*.npy $ROOT/docs/*.npy ;;
        FuzzPNG) echo $ROOT/Tests/Fixtures/io/*.png $ROOT/docs/*.png ;;
        FuzzIDX) echo $ROOT/Tests/Fixtures/io/*ubyte* Seeds/FuzzIDX ;;
        FuzzConfigJSON) echo Seeds/FuzzConfigJSON ;;
        FuzzModelMetadata) echo Seeds/FuzzModelMetadata ;;
    esac
}

mkdir -p .logs
export LSAN_OPTIONS="suppressions=$PWD/lsan-suppressions.txt:print_suppressions=0"
for t in "${TARGETS[@]}"; do
    mkdir -p .corpus/$t FailCases/$t
    seeddir=.corpus/$t.seeds
    rm -rf $seeddir && mkdir -p $seeddir
    for s in $(seeds $t); do
        if [ -d "$s" ]; then cp "$s"/* $seeddir/ 2>/dev/null || true; else cp "$s" $seeddir/; fi
    done
    maxlen=131072
    [ $t = FuzzModelFile ] && maxlen=1048576   # keeps the converted tiny model whole
    echo "== $t: ${SECONDS_EACH}s, log .logs/$t.log"
    nice -n 10 "$BIN/$t" .corpus/$t $seeddir -max_total_time=$SECONDS_EACH -rss_limit_mb=2048 -timeout=10 \
        -max_len=$maxlen -artifact_prefix=FailCases/$t/ -print_final_stats=1 > .logs/$t.log 2>&1 || true
    grep -E "^#[0-9]+ +DONE|^stat::|^==[0-9]+==ERROR|^SUMMARY" .logs/$t.log || tail -5 .logs/$t.log
    ls FailCases/$t | grep -v .gitkeep || echo "   no crashes"
done
