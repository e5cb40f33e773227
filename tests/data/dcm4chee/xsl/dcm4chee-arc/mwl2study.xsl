<?xml version="1.0" encoding="UTF-8"?>
<!-- Test stylesheet named as dcm4chee-arc's mwl2study.xsl: from the worklist item, the Accession
     Number and the Requested Procedure Description (0032,1060). -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml"/>
  <xsl:template match="/NativeDicomModel">
    <NativeDicomModel>
      <xsl:copy-of select="DicomAttribute[@tag='00080050' or @tag='00321060']"/>
    </NativeDicomModel>
  </xsl:template>
</xsl:stylesheet>
