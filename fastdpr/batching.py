"""Batching defaults shared by the encoder, the index builder and the CLI (a light module: the CLI
imports it without loading ONNX Runtime)."""

#: Passages per ORT call when indexing. Measured on MiniLM-DPR over SQuAD passages (2 threads, length-
#: sorted): int8 passages/s at batch 1/4/8/16/32 = 118/131/123/108/99 and fp32 56/60/58/55/53, so small
#: batches win (int8 gains most) and 32 was the slowest. 8 is within noise of 4 and makes half as many
#: session calls.
DEFAULT_PASSAGE_BATCH_SIZE = 8

#: Questions per ORT call in ``Retriever.search_batch`` (sorted by length, so padding stays small).
DEFAULT_QUESTION_BATCH_SIZE = 32
#: Passages ``fastdpr index`` tokenizes and length-sorts together: bigger chunks, less padding.
ENCODE_CHUNK = 2048
