import Testing
@testable import ShaleFormat

struct FormatConstantsTests {
    @Test func numbersEveryStructureAgreesOn() {
        #expect(Format.version == 2)
        #expect(Format.blockBytes == 4096)
        #expect(Format.nameBytesMax == 255)
        #expect(Format.deviceSlots == 8)
    }

    /// Tier codes are stored in extents, the device table, bitmaps and device headers.
    @Test func tierCodesAreStable() {
        #expect(Tier.allCases.map(\.rawValue) == [1, 2, 3])
        #expect(Tier.allCases.map(\.description) == ["nvm", "ssd", "hdd"])
        #expect(Tier(rawValue: 0) == nil)
        #expect(Tier(rawValue: 4) == nil)
    }

    @Test func volumeIDPrintsAndParsesTheUsualForm() {
        let text = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
        let id = VolumeID(text)
        #expect(id?.bytes == [0x1B, 0x4E, 0x28, 0xBA, 0x2F, 0xA1, 0x41, 0xD2,
                              0x88, 0x3F, 0x00, 0x16, 0xD3, 0xCC, 0xA4, 0x27])
        #expect(id?.description == text)
        #expect(VolumeID("1B4E28BA2FA141D2883F0016D3CCA427") == id)
    }

    @Test(arguments: ["", "1b4e28ba-2fa1-41d2-883f-0016d3cca42", "1b4e28ba-2fa1-41d2-883f-0016d3cca4270",
                      "1b4e28ba-2fa1-41d2-883f-0016d3cca4zz", "not a uuid at all, not at all!!!"])
    func malformedVolumeIDIsRefused(text: String) {
        #expect(VolumeID(text) == nil)
    }

    @Test func randomVolumeIDsAreVersion4AndDistinct() {
        let ids = (0 ..< 64).map { _ in VolumeID.random() }
        #expect(Set(ids).count == 64)
        for id in ids {
            #expect(id.bytes[6] >> 4 == 4)
            #expect(id.bytes[8] & 0xC0 == 0x80)
            #expect(VolumeID(id.description) == id)
        }
    }

    @Test func checksumSeedIsTheCRC32COfTheVolumeID() {
        #expect(Fixture.volume.checksumSeed == CRC32C.checksum(Fixture.volume.bytes))
        #expect(Fixture.volume.checksumSeed != Fixture.otherVolume.checksumSeed)
    }
}

struct FormatErrorTests {
    @Test func descriptionsNameTheStructureAndTheNumbers() {
        #expect(FormatError.unsupportedVersion(structure: "superblock", found: 2, supported: 1).description
            == "superblock: format version 2, but this shale reads version 1")
        #expect(FormatError.checksumMismatch(structure: "inode 5", stored: 0xAB, computed: 0x1234_5678).description
            == "inode 5: checksum mismatch (stored 0x000000ab, computed 0x12345678): torn or corrupted")
        #expect(FormatError.invalidField(structure: "superblock", field: "root inode", reason: "0").description
            == "superblock: invalid root inode: 0")
    }

    @Test func badMagicShowsOnlyPrintableBytes() {
        let error = FormatError.badMagic(structure: "superblock", found: Array("EXT4".utf8) + [0, 0xFF, 0x41, 0x42, 0x43])
        #expect(error.description == "superblock: bad magic \"EXT4..AB\" (not a Shale superblock)")
    }
}
