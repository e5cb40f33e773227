"""dcm4chee-arc's attribute coercions as URI schemes of the engine.

One module per family, each imported when a rule first names its scheme:
``merge-attrs:`` (:mod:`.merge`, templates of :mod:`.template`),
``nullify-tag:`` and ``nullify-pixel-data:`` (:mod:`.nullify`),
``use-calling-aet-as:`` (:mod:`.calling`), ``change-charset:`` and
``trim-ISO2022:`` (:mod:`.charset`), ``sup-from-dev:`` (:mod:`.device`),
``merge-mwl:`` (:mod:`.mwl`) and ``xslt:`` (:mod:`.xslt`, the PS3.19 XML of
:mod:`.nativexml`). Attribute paths are parsed in :mod:`.paths`.
"""
