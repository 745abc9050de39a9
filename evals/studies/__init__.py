"""The CPU studies: they train with ``unilip.training`` and evaluate through the harness's public API.

- ``sweep``: the distillation-weight sweep and the quickstart built on it (``evals.run``), with its
  table and plot (``report``) and its HTML page (``html_report``);
- ``understanding``: the digit-trained teacher, the frozen head and the understanding metrics;
- ``generator_study``: the tiny digits generator trained on the CPU and measured with the frozen
  classifier, its tiny LLM pretrained first (``tiny_llm``);
- ``text_tokenizer``: the tiny byte-level BPE text tokenizer, trained offline;
- ``cli``: their commands (``unilip quickstart``, ``unilip train sweep``, ``unilip train generator-study``).
"""
