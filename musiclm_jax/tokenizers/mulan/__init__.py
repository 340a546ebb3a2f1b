"""MuLan: a joint music/text embedding (audio tower, text tower, contrastive training)."""
