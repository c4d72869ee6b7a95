"""Batching defaults shared by the encoder, the index builder and the CLI (a light module: the CLI
imports it without loading ONNX Runtime)."""

#: Inputs per ONNX Runtime call (issue #19). Dynamic int8 quantizes activations with ONE scale per
#: call (``DynamicQuantizeLinear`` over the whole batch tensor, padding included), so an input batched
#: with others got an embedding that depended on them: of 64 SQuAD questions only 9 kept their exact
#: top-10 alone vs in a batch of 32, and in ``fastdpr serve`` one client's question moved another's
#: results. One input per call makes every embedding a function of its own text only (bitwise: the
#: same vector alone, in any batch, in any build path, under any load), and costs little: int8
#: passages one per call ran as fast as batches of 8 (docs/benchmarks.md, "Same input, same vector"), and a lone
#: question was always one call. ``batch_size`` arguments still set how many inputs are tokenized and
#: length-sorted together; calls never mix inputs.
INPUTS_PER_CALL = 1

#: Passages per ``encode_passages`` group (tokenized together, length-sorted; one ORT call per passage,
#: see :data:`INPUTS_PER_CALL`).
DEFAULT_PASSAGE_BATCH_SIZE = 8

#: Questions per ``Retriever.search_batch`` group (tokenized together; one ORT call per question).
DEFAULT_QUESTION_BATCH_SIZE = 32
#: Passages ``fastdpr index`` tokenizes and length-sorts together: bigger chunks, less padding.
ENCODE_CHUNK = 2048
