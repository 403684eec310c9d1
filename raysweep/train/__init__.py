"""The training and evaluation loops every stage uses (no Ray here), and the task samplers:
`ranks` (place in the job, collectives), `stream` (each rank's slice of a global batch), `loop`
(`Optim`, `Trainer`, `train`), `evaluate`, `mixing` (which task the next batch comes from)."""
