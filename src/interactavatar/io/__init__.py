"""Files, media and object storage: the only place the package touches bytes on disk or on S3."""
