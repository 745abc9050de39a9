"""The built-in adapters, one module each (``evals.registry.BUILTIN_ADAPTERS`` names them): ``unilip``,
``internvl``, ``diffusers_ae``, ``diffusers_pipe``, ``hf_vlm``, ``folder``. Each is imported only when a model
reference names it; ``unilip eval adapters`` lists them with the installed ones (``unilip.adapters`` entry points).
"""
