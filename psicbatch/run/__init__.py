"""``psicbatch run``: images in, one Parquet table of probabilities and RLE masks out."""
