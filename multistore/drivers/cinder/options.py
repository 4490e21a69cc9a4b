"""The cinder store's options: glance_store's, same names, types and defaults,
plus three of multistore's own (marked so in their help)."""

from __future__ import annotations

from oslo_config import cfg

#: glance_store's cinder options (glance_store 5.x, ``_drivers/cinder/store.py``).
GLANCE_STORE_OPTIONS = [
    cfg.StrOpt("cinder_catalog_info", default="volumev3::publicURL",
               help="Where Cinder is in the service catalog of the request "
                    "context: ``<service_type>:<service_name>:<interface>`` "
                    "(used without service credentials and without "
                    "``cinder_endpoint_template``)."),
    cfg.StrOpt("cinder_endpoint_template", default=None,
               help="Cinder's endpoint instead of a catalog lookup, "
                    "``%%(tenant)s`` replaced by the request's project: "
                    "``http://cinder.example.org/v3/%%(tenant)s``. Ignored "
                    "with service credentials (Keystone)."),
    cfg.StrOpt("cinder_os_region_name", deprecated_name="os_region_name", default=None,
               help="Region to pick from the service catalog."),
    cfg.StrOpt("cinder_ca_certificates_file",
               help="CA certificates file to verify Cinder's HTTPS endpoint."),
    cfg.IntOpt("cinder_http_retries", min=0, default=3,
               help="Retries of a Cinder API call that could not connect (and, by "
                    "cinderclient, of a rate-limited call)."),
    cfg.IntOpt("cinder_state_transition_timeout", min=0, default=300,
               help="Seconds to wait for a volume to finish a state transition "
                    "(creating, extending, attaching, deleting...)."),
    cfg.BoolOpt("cinder_api_insecure", default=False,
                help="Do not verify Cinder's TLS certificate."),
    cfg.StrOpt("cinder_store_auth_address", default=None,
               help="Keystone's address for the store's own (service) "
                    "credentials. With user name, password and project (or an "
                    "application credential) every volume is created in that "
                    "project; without, in the request context's project."),
    cfg.StrOpt("cinder_store_user_name", default=None,
               help="The service user (see ``cinder_store_auth_address``)."),
    cfg.StrOpt("cinder_store_user_domain_name", default="Default",
               help="The service user's domain."),
    cfg.StrOpt("cinder_store_password", secret=True,
               help="The service user's password."),
    cfg.StrOpt("cinder_store_application_credential_id", default=None,
               help="An application credential to use instead of the password."),
    cfg.StrOpt("cinder_store_application_credential_secret", secret=True,
               help="The application credential's secret."),
    cfg.StrOpt("cinder_store_project_name", default=None,
               help="The project owning the image volumes (service credentials)."),
    cfg.StrOpt("cinder_store_project_domain_name", default="Default",
               help="That project's domain."),
    cfg.StrOpt("rootwrap_config", default="/etc/glance/rootwrap.conf",
               help="rootwrap configuration for os-brick's privileged calls "
                    "(``sudo glance-rootwrap <file>``)."),
    cfg.StrOpt("cinder_volume_type", default=None,
               help="The volume type of this store's volumes (Cinder's default "
                    "type if unset). Two cinder stores differ by their type."),
    cfg.BoolOpt("cinder_enforce_multipath", default=False,
                help="Refuse to attach without multipathd running."),
    cfg.BoolOpt("cinder_use_multipath", default=False,
                help="Attach volumes with multipath."),
    cfg.StrOpt("cinder_mount_point_base", default="/var/lib/glance/mnt",
               help="Where NFS volumes would be mounted (connectors that mount)."),
    cfg.BoolOpt("cinder_do_extend_attached", default=False,
                help="Grow a volume of unknown final size while it stays attached "
                     "(online extend, microversion 3.42+); otherwise detach, "
                     "extend and attach again."),
    cfg.IntOpt("cinder_attachment_retry_attempts", min=1, default=5,
               help="Attempts to attach a volume that is in a transitional state "
                    "or attached elsewhere (a reader in another process)."),
]

#: multistore's own additions.
MULTISTORE_OPTIONS = [
    cfg.StrOpt("cinder_store_auth_type", default="keystone",
               choices=[("keystone", "Keystone (glance_store's behaviour)"),
                        ("noauth", "Cinder's noauth middleware: the token is "
                                   "``<cinder_store_user_name>:<cinder_store_project_name>`` "
                                   "and the endpoint ``cinder_endpoint_template``")],
               help="multistore only: how the store's own credentials "
                    "authenticate. ``noauth`` serves deployments whose "
                    "cinder-api runs ``auth_strategy = noauth`` (tests, "
                    "all-in-one set-ups)."),
    cfg.FloatOpt("cinder_api_timeout", default=60.0, min=1.0,
                 help="multistore only: seconds one Cinder API request may take "
                      "before the store is reported unavailable (glance_store "
                      "waits forever)."),
    cfg.StrOpt("cinder_rbd_keyring_file", default=None,
               help="multistore only: a cephx keyring added to RBD connection "
                    "info (Cinder no longer sends one); unset, os-brick reads "
                    "``/etc/ceph/<cluster>.client.<user>.keyring``."),
]

OPTIONS = [*GLANCE_STORE_OPTIONS, *MULTISTORE_OPTIONS]

__all__ = ["OPTIONS", "GLANCE_STORE_OPTIONS", "MULTISTORE_OPTIONS"]
