"""The configuration directory: LDIF files or LDAP, validation, loading and watching.

The submodules import ldap3 and jsonschema; this package module itself stays
light, so that commands that do not read the directory do not pay for them.
"""

#: The device name of the node when none is given.
DEFAULT_DEVICE = "coercion"
