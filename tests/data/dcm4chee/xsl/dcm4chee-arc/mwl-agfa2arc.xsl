<?xml version="1.0" encoding="UTF-8"?>
<!-- Test stylesheet named as dcm4chee-arc's mwl-agfa2arc.xsl: copies Accession Number into
     Requested Procedure ID (0040,1001). -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml"/>
  <xsl:template match="/NativeDicomModel">
    <NativeDicomModel>
      <DicomAttribute tag="00401001" vr="SH">
        <Value number="1"><xsl:value-of select="DicomAttribute[@tag='00080050']/Value"/></Value>
      </DicomAttribute>
    </NativeDicomModel>
  </xsl:template>
</xsl:stylesheet>
