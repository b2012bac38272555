"""Video engines: the model side of a chunk job (compute node; torch lives here).

    base         the Engine interface (a Protocol) and load_engine (model.engine)
    attention    the attention dispatcher (generate.attention)
    checkpoint   reading an official checkpoint folder
    fast         the fast path's apply_* speed-ups
    parallel     process groups of the parallel modes
    parallelize  sp (FSDP + Ulysses) applied to a plain model
    shims        importing the official `wan` modules on CPU and CUDA
    wan_ti2v     the TI2V-5B sampler: sample(prompt, image, seed)
    wan_i2v      the I2V-A14B sampler (two experts), a subclass of the TI2V-5B one
    layout_i2v   the A14B checkpoint folder (no torch); checkpoint_i2v: its Wan2.1 VAE loader
"""
