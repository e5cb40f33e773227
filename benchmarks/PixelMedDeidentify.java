// De-identify every DICOM file under SRC into DST with PixelMed's ClinicalTrialsAttributes.
//
// Usage: java -cp pixelmed.jar:CLASSES PixelMedDeidentify SRC DST [FLAG]...
// Flags, named after the PS3.15 options they stand in for (see compare_pixelmed.py):
//   RetainUIDsOption                  UIDs kept (otherwise remapped, one map for the run)
//   RetainDeviceIdentityOption        keepDeviceIdentity
//   RetainInstitutionIdentityOption   keepInstitutionIdentity
//   RetainPatientCharacteristicsOption keepPatientCharacteristics
//   CleanDescriptorsOption            keepDescriptors, keepSeriesDescriptors, keepProtocolName
//   CleanStructuredContentOption      structured content modified (otherwise removed)
//   RetainSafePrivateOption           unsafe private attributes removed (otherwise all private)
//   RetainLongitudinalTemporalInformationFullDatesOption      dates kept
//   RetainLongitudinalTemporalInformationModifiedDatesOption  dates moved, the earliest date
//                                      of each patient to 2000-01-01 (otherwise removed)
// The output mirrors SRC's relative paths and keeps each file's transfer syntax. Files that
// are not DICOM are skipped. Prints "N written, M skipped" and never an element value.

import com.pixelmed.dicom.AttributeList;
import com.pixelmed.dicom.ClinicalTrialsAttributes;
import com.pixelmed.dicom.DicomException;
import com.pixelmed.dicom.FileMetaInformation;
import com.pixelmed.dicom.TagFromName;
import com.pixelmed.dicom.TransferSyntax;
import com.pixelmed.dicom.Attribute;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.Date;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.Stream;

public class PixelMedDeidentify {

    private final Set<String> flags;
    private final Map<String, Date> earliestByPatient = new HashMap<>();
    private final Date epoch = new Date(946684800000L); // 2000-01-01T00:00:00Z

    PixelMedDeidentify(Set<String> flags) {
        this.flags = flags;
    }

    private boolean has(String flag) {
        return flags.contains(flag);
    }

    private int handleDates() {
        if (has("RetainLongitudinalTemporalInformationFullDatesOption")) {
            return ClinicalTrialsAttributes.HandleDates.keep;
        }
        if (has("RetainLongitudinalTemporalInformationModifiedDatesOption")) {
            return ClinicalTrialsAttributes.HandleDates.modify;
        }
        return ClinicalTrialsAttributes.HandleDates.remove;
    }

    private Date earliestDate(AttributeList list) {
        String patient = Attribute.getSingleStringValueOrEmptyString(list, TagFromName.PatientID);
        Date earliest = earliestByPatient.get(patient);
        if (earliest == null) {
            earliest = ClinicalTrialsAttributes.findEarliestDateTime(list);
            if (earliest != null) {
                earliestByPatient.put(patient, earliest);
            }
        }
        return earliest == null ? epoch : earliest;
    }

    void deidentify(Path source, Path target) throws Exception {
        AttributeList list = new AttributeList();
        list.setDecompressPixelData(false);
        list.read(source.toFile());
        String syntax = Attribute.getSingleStringValueOrDefault(
            list, TagFromName.TransferSyntaxUID, TransferSyntax.ExplicitVRLittleEndian);
        Date earliest = earliestDate(list);
        list.removeGroupLengthAttributes();
        list.removeMetaInformationHeaderAttributes();
        ClinicalTrialsAttributes.removeClinicalTrialsAttributes(list);
        boolean descriptors = has("CleanDescriptorsOption");
        ClinicalTrialsAttributes.removeOrNullIdentifyingAttributes(
            list,
            ClinicalTrialsAttributes.HandleUIDs.keep,
            descriptors,
            descriptors,
            descriptors,
            has("RetainPatientCharacteristicsOption"),
            has("RetainDeviceIdentityOption"),
            has("RetainInstitutionIdentityOption"),
            handleDates(),
            epoch,
            earliest,
            has("CleanStructuredContentOption")
                ? ClinicalTrialsAttributes.HandleStructuredContent.modify
                : ClinicalTrialsAttributes.HandleStructuredContent.remove);
        if (has("RetainSafePrivateOption")) {
            list.removeUnsafePrivateAttributes();
        } else {
            list.removePrivateAttributes();
        }
        if (!has("RetainUIDsOption")) {
            ClinicalTrialsAttributes.remapUIDAttributes(list);
        }
        FileMetaInformation.addFileMetaInformation(list, syntax, "PIXELMED");
        Files.createDirectories(target.getParent());
        list.write(target.toFile(), syntax, true, true);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: PixelMedDeidentify SRC DST [FLAG]...");
            System.exit(2);
        }
        Path src = Paths.get(args[0]);
        Path dst = Paths.get(args[1]);
        Set<String> flags = new HashSet<>(Arrays.asList(args).subList(2, args.length));
        PixelMedDeidentify tool = new PixelMedDeidentify(flags);
        List<Path> files;
        try (Stream<Path> walk = Files.walk(src)) {
            files = walk.filter(Files::isRegularFile).sorted().collect(Collectors.toList());
        }
        int written = 0;
        int skipped = 0;
        for (Path file : files) {
            try {
                tool.deidentify(file, dst.resolve(src.relativize(file)));
                written++;
            } catch (DicomException | java.io.IOException e) {
                System.err.println("skipped " + src.relativize(file) + ": " + e.getClass().getSimpleName());
                skipped++;
            }
        }
        System.out.println(written + " written, " + skipped + " skipped");
    }
}
