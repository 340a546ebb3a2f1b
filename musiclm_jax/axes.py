"""Logical axis names: the only names layers use for sharding.

Parameter axes and activation axes are distinct names so that rules can shard weights (e.g. FSDP
over `embed`) without forcing the same layout on activations. Mesh axis names never appear in
layers; `partitioning.py` maps these logical names onto the mesh.
"""

# Parameter axes.
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
KV = "kv"  # per-head feature dimension
VOCAB = "vocab"
LAYERS = "layers"  # the stacked-layer axis that nn.scan adds
RELPOS_BUCKETS = "relpos_buckets"

# Activation axes.
BATCH = "activation_batch"
LENGTH = "activation_length"
ACT_EMBED = "activation_embed"
ACT_MLP = "activation_mlp"
ACT_HEADS = "activation_heads"
ACT_KV = "activation_kv"
ACT_VOCAB = "activation_vocab"
CACHE_LENGTH = "cache_length"

# Mesh axis names (used by partitioning.py and mesh configs only).
MESH_DATA = "data"
MESH_FSDP = "fsdp"
MESH_TENSOR = "tensor"
MESH_AXES = (MESH_DATA, MESH_FSDP, MESH_TENSOR)
