"""Export files: how an export's rows are read and written. The lifecycle (create, build,
retry, recover) is the service's, ``labeling.services.exports``; gold-set snapshots are the
gold services', ``labeling.services.goldset_snapshots``.

- ``request``: the export request, checked (the API, the admin and the command use it).
- ``rows``: the row format in one place: columns and their types (Parquet's included), the
  portable (ORM) rows and the PostgreSQL statement that renders them.
- ``engine``: streams the rows into a temporary file (portable, COPY text or Arrow reads,
  parallel streams on one snapshot, progress, the size limit and the sha256).
- ``pg_arrow``: PostgreSQL results as Arrow batches through ADBC (the engine's Arrow reads).
- ``writers``: JSON lines, CSV and Parquet writers with deterministic bytes.
- ``storage``: where a finished file goes.
- ``manifest``: what the manifest records, and the code version that wrote the file.
"""
