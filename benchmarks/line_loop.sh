#!/usr/bin/env bash
# A line's loop on real images, checked against the same images run as a results file:
# a --watch inspects copies of labelled folders (copied in as a camera would write them),
# the review's labels are the original folders, and the watch folder is audited
# (`eval OUT --labels`) and recalibrated (`calibrate OUT --labels`) as a results file of
# the same images is. The figures must be the same, file for file. Then the line's images
# are moved away, as a line archives them, and the watch folder is audited again.
#   benchmarks/line_loop.sh MODEL DATA OUT FOLDER...
# MODEL: a checkpoint that never saw FOLDERs (e.g. a cv fold's model and its test folders);
# DATA: a KolektorSDD folder; FOLDER: the kosNN folders the line sees. Only figures are
# kept in OUT's summary.md: the pages with pictures of the images stay out of the project.
set -euo pipefail
model=$(realpath "$1") data=$(realpath "$2") out=$(realpath -m "$3")
shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
psicbatch=${PSICBATCH:-$here/.venv/bin/psicbatch}
rm -rf "$out/reviewed" "$out/line" "$out/archived" "$out/watched" "$out/run.parquet" \
  "$out"/audit-* "$out"/decisions-*
mkdir -p "$out/reviewed" "$out/line"
for folder in "$@"; do ln -s "$data/$folder" "$out/reviewed/$folder"; done
same=(--model "$model" --masks all --decoder pil --precision fp32 --device cpu)
"$psicbatch" run --watch "$out/line" --out "$out/watched" --settle 0.5 "${same[@]}" \
  2> "$out/watch.log" &
watching=$!
trap 'kill "$watching" 2>/dev/null || true' EXIT
sleep 5
images=0
for folder in "$@"; do
  mkdir "$out/line/$folder"
  for image in "$data/$folder"/*.jpg; do cp "$image" "$out/line/$folder/"; images=$((images + 1)); done
done
"$here/.venv/bin/python" - "$out/watched" "$images" <<'PY'
import sys, time
from pathlib import Path
import pyarrow.dataset as ds
folder, wanted = Path(sys.argv[1]), int(sys.argv[2])
while True:
    parts = list(folder.glob("date=*/hour=*/part-*.parquet"))
    if parts and ds.dataset(parts, format="parquet").count_rows() >= wanted:
        break
    time.sleep(1)
PY
kill -TERM "$watching"
wait "$watching"
trap - EXIT
"$psicbatch" run "$out/line" "${same[@]}" -o "$out/run.parquet" -q
for source in watched run.parquet; do
  name=${source%.parquet}
  "$psicbatch" eval "$out/$source" --labels "$out/reviewed" --layout kolektorsdd \
    -o "$out/audit-$name" -q
  "$psicbatch" calibrate "$out/$source" --labels "$out/reviewed" --layout kolektorsdd \
    -o "$out/decisions-$name.json" -q
done
mv "$out/line" "$out/archived"
"$psicbatch" eval "$out/watched" --labels "$out/reviewed" --layout kolektorsdd \
  -o "$out/audit-moved" -q
"$here/.venv/bin/python" - "$out" "$images" <<'PY'
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
from psicbatch.bench.machine import machine
out, images = Path(sys.argv[1]), int(sys.argv[2])
def rows(name):
    table = pq.read_table(out / f"audit-{name}" / "predictions.parquet").to_pylist()
    # As JSON: an IoU with no defect on either side is NaN, which equals nothing.
    return {row["id"]: json.dumps({k: v for k, v in row.items() if k not in ("path", "path_bytes")})
            for row in table}
watched, ran, moved = rows("watched"), rows("run"), rows("moved")
metrics = {n: json.loads((out / f"audit-{n}" / "metrics.json").read_text()) for n in ("watched", "run")}
chosen = {n: json.loads((out / f"decisions-{n}.json").read_text())["validation"] for n in ("watched", "run")}
keys = ("threshold", "escapes", "defective", "false_rejects", "good")
headline = ("mask_miou", "boundary_miou")
m = metrics["watched"]
lines = [
    "# A line's loop on KolektorSDD: a watch folder audited and recalibrated",
    "",
    f"Machine: {machine()['cpu']} ({machine()['isa']}).",
    "",
    f"{images} images copied into the watched folder, labels from the original folders.",
    "",
    f"- Per-image audit rows identical between the watch folder and the results file: "
    f"{watched == ran} ({len(watched)} images).",
    f"- Audit sources: watch: {metrics['watched']['source']} Results file: {metrics['run']['source']}",
    f"- Audit of the watch folder: AUC {100 * m['classification']['auc']:.2f}, AP "
    f"{100 * m['classification']['ap']:.2f}, FP {m['classification']['fp']}, FN "
    f"{m['classification']['fn']}, mask mIoU (defective images) "
    f"{100 * m['segmentation']['mask_miou']:.2f}; the same for the results file: "
    f"{metrics['watched']['classification'] == metrics['run']['classification'] and metrics['watched']['segmentation'] == metrics['run']['segmentation']}.",
    f"- Decisions for 0 escapes chosen on the watch folder: "
    + ", ".join(f"{k} {chosen['watched'][k]}" for k in keys)
    + f"; on the results file the same: {all(chosen['watched'][k] == chosen['run'][k] for k in keys)}.",
    f"- Their source: {chosen['watched']['source']}",
    f"- After the line's images were moved away, the watch folder's audit rows identical "
    f"to those above: {moved == watched}. Its source: "
    + json.loads((out / "audit-moved" / "metrics.json").read_text())["source"],
    "",
]
(out / "summary.md").write_text("\n".join(lines))
print("\n".join(lines))
PY
