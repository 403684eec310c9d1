"""The plan: a trial's stages as typed, frozen configs, each keyed by a hash of its whole
config (parent key included). Pure: no torch, no ray."""
