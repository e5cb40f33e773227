<?xml version="1.0" encoding="UTF-8"?>
<!-- Test stylesheet named as dcm4chee-arc's nullify-pn.xsl: empties Patient's Name (0010,0010). -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml"/>
  <xsl:template match="/NativeDicomModel">
    <NativeDicomModel>
      <DicomAttribute tag="00100010" vr="PN"/>
    </NativeDicomModel>
  </xsl:template>
</xsl:stylesheet>
