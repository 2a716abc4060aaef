"""Bootstrap-token controllers (upstream's ``pkg/controller/bootstrap``): `tokencleaner`."""
