"""The migration pipeline: introspect, diff, plan (in place or rebuilt), rehearse, check against data, execute."""
