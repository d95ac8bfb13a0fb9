"""Model components: configs, vision tower, projector, fusion, language models, builder."""
