"""wmsub: run the WorldModelBench video benchmark on Slurm."""
__version__ = "0.1.0"
