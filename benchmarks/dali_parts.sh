#!/usr/bin/env bash
# DALI for a GPU machine without network access that receives files in calls of about
# 60 MB: DALI for CUDA 13 and its NVIDIA image libraries are about 270 MB of wheels.
#
#   benchmarks/dali_parts.sh pack DIR            # on a connected machine: download them for
#                                                # Python 3.12 into one tar, cut into 55 MiB
#                                                # parts DIR/part-aa, part-ab, ... and DIR/SHA256
#   benchmarks/dali_parts.sh install DIR TARGET  # on the GPU machine, once every part is in
#                                                # DIR: check, unpack, pip install --target
#
# Afterwards PYTHONPATH=TARGET makes `import nvidia.dali` work for the gpu tests and
# benchmarks/gpu_check.sh. Wheels the GPU machine's Python already has (numpy, packaging,
# pyyaml, six, typing_extensions, wheel) are left out, so TARGET shadows none of them.
set -euo pipefail
usage="usage: benchmarks/dali_parts.sh pack DIR | install DIR TARGET"
command=${1:?$usage}
dir=${2:?$usage}
python=${PYTHON:-python3}
dali=${DALI:-nvidia-dali-cuda130==2.4.0}
present="numpy packaging pyyaml six typing_extensions wheel"

case $command in
pack)
    mkdir -p "$dir"
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    "$python" -m pip download --quiet --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 -d "$wheels" "$dali"
    for name in $present; do rm -f "$wheels/$name"-*.whl; done
    rm -f "$dir"/part-* "$dir/SHA256"
    (cd "$wheels" && tar cf - ./*.whl) | split -b 55M - "$dir/part-"
    (cd "$dir" && cat part-* | sha256sum | cut -d' ' -f1 >SHA256)
    ls -l "$dir"
    ;;
install)
    target=${3:?$usage}
    expected=$(cat "$dir/SHA256")
    actual=$(cat "$dir"/part-* | sha256sum | cut -d' ' -f1)
    if [[ $actual != "$expected" ]]; then
        echo "dali_parts: the parts in $dir do not make the packed tar (missing or damaged part)" >&2
        exit 1
    fi
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    cat "$dir"/part-* | tar xf - -C "$wheels"
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$target" "$wheels"/*.whl
    echo "dali_parts: installed into $target; use PYTHONPATH=$target"
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
