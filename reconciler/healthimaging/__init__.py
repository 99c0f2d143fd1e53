"""The service seam: the protocol the engine uses (:mod:`.api`), its boto3
implementation (:mod:`.aws`), client-side pacing and waiting on writes."""
