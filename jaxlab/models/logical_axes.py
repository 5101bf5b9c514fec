"""Logical axis names that models attach to their parameters.

Models only name what a parameter dimension *is*; `jaxlab.sharding` maps these names to mesh axes
with rules from the config, so a model never needs to know the mesh it runs on.
"""

CONV_IN = "conv_in"  # input channels of a convolution kernel
CONV_OUT = "conv_out"  # output channels of a convolution kernel (and the norm that follows it)
EMBED = "embed"  # features entering a dense layer
MLP = "mlp"  # hidden features produced by a dense layer
CLASSES = "classes"  # classifier outputs
QKV = "qkv"  # fused query/key/value projections: 3 x heads x head_dim features
HEADS = "heads"  # attention outputs laid out as heads x head_dim (input of the output projection)

# Conv kernels are (H, W, C_in, C_out); spatial taps are never sharded.
CONV_KERNEL = (None, None, CONV_IN, CONV_OUT)
HIDDEN_DENSE_KERNEL = (EMBED, MLP)
HEAD_KERNEL = (EMBED, CLASSES)
QKV_KERNEL = (EMBED, QKV)
ATTN_OUT_KERNEL = (HEADS, EMBED)
