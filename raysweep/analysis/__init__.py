"""Analysis of a sweep's tables, one room per step: `points` (read a sweep or a results table),
`gains` (intermediate-training gains, `gains.parquet`), `fits` (scaling fits per group,
`fits.parquet`), `summary` (the printed table), `plots` (figures from those tables only) and
`scaling` (the numerics). The best-trial rule is `raysweep.results.best`."""
