<?xml version="1.0" encoding="UTF-8"?>
<!-- Test stylesheet named as dcm4chee-arc's correct-vr.xsl: sets Station Name (0008,1010). -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml"/>
  <xsl:template match="/NativeDicomModel">
    <NativeDicomModel>
      <DicomAttribute tag="00081010" vr="SH"><Value number="1">CORRECTED</Value></DicomAttribute>
    </NativeDicomModel>
  </xsl:template>
</xsl:stylesheet>
