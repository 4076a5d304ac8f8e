"""dct-gen: DCTransformer (Nash et al., ICML 2021): images as sparse DCT triples, TF2 + Keras 3."""

__version__ = "0.1.0"
