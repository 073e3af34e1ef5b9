"""Package distribution: originals, processing, permanent links, rollback, client API."""
