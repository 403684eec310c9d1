"""Running a sweep: Tune (`sweep`), the Tune trainable (`trial`), the stage store (`store`),
what each Train worker runs (`runner`, one function per stage kind in `stages`)."""
