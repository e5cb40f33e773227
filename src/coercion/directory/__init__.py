"""The configuration directory: LDIF files or LDAP, validation, loading and watching."""
