//! Result exporters: local directory, tar file, OCI image layout.
