<?xml version="1.0" encoding="UTF-8"?>
<!-- Test stylesheet named as dcm4chee-arc's ensure-pid.xsl: a Patient ID from the Study
     Instance UID when the object has none, with the sending AE title as its issuer. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml"/>
  <xsl:param name="SendingApplicationEntityTitle"/>
  <xsl:template match="/NativeDicomModel">
    <NativeDicomModel>
      <xsl:if test="not(DicomAttribute[@tag='00100020']/Value)">
        <DicomAttribute tag="00100020" vr="LO">
          <Value number="1"><xsl:value-of select="DicomAttribute[@tag='0020000D']/Value"/></Value>
        </DicomAttribute>
        <DicomAttribute tag="00100021" vr="LO">
          <Value number="1"><xsl:value-of select="$SendingApplicationEntityTitle"/></Value>
        </DicomAttribute>
      </xsl:if>
    </NativeDicomModel>
  </xsl:template>
</xsl:stylesheet>
