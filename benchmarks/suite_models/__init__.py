"""A suite of small speech model families trained briefly on the bundled MFCC data, for the int8
search benchmark (benchmarks/model_suite.py). Independent of optkit: plain PyTorch + NumPy."""
