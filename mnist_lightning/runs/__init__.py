"""Run folders: what a run writes and where (`layout`), how files are written (`atomic`), who may write into
a folder (`lock`), where a result came from (`lineage`), which checkpoint a command uses (`resolve`), and the
table of many runs (`summary`). Imports nothing from Lightning or Hydra: every other layer builds on it."""
