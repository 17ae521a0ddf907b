"""Adapters behind hub.ports: object store (S3 via minio), document index, local SeaweedFS launcher."""
