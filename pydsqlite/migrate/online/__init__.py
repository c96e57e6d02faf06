"""Online migrations (``sync_models(..., online=True)``): tables that need a rebuild are copied
while the application keeps reading and writing them, holding SQLite's write lock only for
short steps.

The migration runs in phases, each step its own short transaction (see ``shadow`` for one
table's machinery):

1. Leftovers of an interrupted run are settled: old tables are freed, a pending index pass
   finished; an interrupted copy is resumed when the new plan copies the same way.
2. The plan is made and checked exactly as offline (same refusals), then every rebuild that
   can go online gets its new table, key log and recorder triggers.
3. Copy: chunks in key order, one statement in one short transaction each, sized to hold the
   write lock for ``STEP_BUDGET``, with a pause after each so that writers waiting in SQLite's
   busy handler (which sleeps in growing steps) get in; catch-up passes over the logged keys
   keep the backlog small.
4. One short final transaction runs the rest of the plan in order, with each online rebuild
   reduced to its last catch-up and the swap, and records the migration.
5. Afterwards the old tables' pages are freed in steps; where the new shape keeps index
   names the old table held, a second copy gives them back.

A claim row names the process running an online migration, so two migrators never run one at
once; it is heartbeaten by every step and taken over only once its process is gone (or silent
for ``STALE_AFTER`` seconds). A killed migrator leaves the original table intact and usable
(the recorder triggers only append to the key log); the next sync settles the rest.

Modules: ``preview`` (which rebuilds go online, their phases' SQL), ``claim`` (one migrator at a
time), ``pacing`` (step sizes, pauses, progress), ``copying`` (each table's pass and the steps'
transactions), ``leftovers`` (what interrupted runs left), ``driver`` (``migrate``: plan, copy,
swap, free).
"""
