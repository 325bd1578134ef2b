"""Third-party batch APIs the kit is proven against (SQS via moto, CouchDB via pouchdb-server) and a
small local one of the kit's own making that is described by a profile only."""
