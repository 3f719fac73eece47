import Testing
@testable import ShaleFormat

struct VolumeManifestTests {
    static let manifest = VolumeManifest(volumeID: Fixture.volume, devices: [
        (.nvm, "/dev/shm/shale-1b4e28ba.nvm"), (.ssd, "ssd.img"), (.hdd, "/mnt/big disk/hdd.img"),
    ])

    @Test func encodesAsDocumented() {
        #expect(Self.manifest.encode() == """
            # Shale volume manifest. Written by `shale mkfs`; edit a path only to move a device.
            format = 2
            uuid = 1b4e28ba-2fa1-41d2-883f-0016d3cca427
            nvm = /dev/shm/shale-1b4e28ba.nvm
            ssd = ssd.img
            hdd = /mnt/big disk/hdd.img

            """)
        #expect(VolumeManifest.fileName == "shale.volume")
    }

    @Test func roundTrip() throws {
        let decoded = try VolumeManifest.decode(Self.manifest.encode())
        #expect(decoded == Self.manifest)
        #expect(decoded.path(.hdd) == "/mnt/big disk/hdd.img")
        let nvmOnly = VolumeManifest(volumeID: Fixture.otherVolume, devices: [(.nvm, "/pmem0/x.nvm")])
        #expect(try VolumeManifest.decode(nvmOnly.encode()) == nvmOnly)
        #expect(nvmOnly.path(.ssd) == nil)
    }

    @Test func commentsBlankLinesAndWhitespaceAreTolerated() throws {
        let text = "\n# made by hand\n\n  format=2  \r\n\tuuid =\t1B4E28BA-2FA1-41D2-883F-0016D3CCA427\n# nvm = /wrong\n"
            + "   # indented comment\nnvm   =   /dev/shm/a = b.nvm   \n\n"
        let decoded = try VolumeManifest.decode(text)
        #expect(decoded.volumeID == Fixture.volume)
        #expect(decoded.devices.count == 1)
        #expect(decoded.path(.nvm) == "/dev/shm/a = b.nvm")
    }

    @Test func unknownKeyIsAnErrorNamingItAndItsLine() {
        let text = Self.manifest.encode() + "zfs = tank\n"
        let error = formatError { try VolumeManifest.decode(text) }
        #expect(error == .invalidField(structure: "volume manifest", field: "line 7", reason: "unknown key \"zfs\""))
    }

    @Test func lineWithoutEqualsIsAnError() {
        let error = formatError { try VolumeManifest.decode("format = 2\nuuid\n") }
        #expect(error == .invalidField(structure: "volume manifest", field: "line 2", reason: "expected `key = value`"))
    }

    @Test func missingUUIDIsAnError() {
        let error = formatError { try VolumeManifest.decode("format = 2\nnvm = /dev/shm/x\n") }
        #expect(error == .invalidField(structure: "volume manifest", field: "uuid", reason: "missing"))
    }

    @Test func repeatedKeysAreErrors() {
        let uuid = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
        let twiceUUID = formatError { try VolumeManifest.decode("format = 2\nuuid = \(uuid)\nuuid = \(uuid)\nnvm = /x\n") }
        #expect(twiceUUID == .invalidField(structure: "volume manifest", field: "uuid", reason: "repeated"))
        let twiceFormat = formatError { try VolumeManifest.decode("format = 2\nformat = 2\nuuid = \(uuid)\nnvm = /x\n") }
        #expect(twiceFormat == .invalidField(structure: "volume manifest", field: "format", reason: "repeated"))
        let twiceNVM = formatError { try VolumeManifest.decode("format = 2\nuuid = \(uuid)\nnvm = /x\nnvm = /y\n") }
        #expect(twiceNVM?.field == "nvm")
    }

    @Test func malformedUUIDIsAnError() {
        let error = formatError { try VolumeManifest.decode("format = 2\nuuid = 1234\nnvm = /x\n") }
        #expect(error?.field == "uuid")
        #expect(error?.description.contains("1234") == true)
    }

    @Test func missingNVMIsAnError() {
        let error = formatError { try VolumeManifest.decode("format = 2\nuuid = \(Fixture.volume)\nssd = ssd.img\n") }
        #expect(error == .invalidField(structure: "volume manifest", field: "nvm", reason: "missing"))
    }

    @Test func missingFormatIsAnError() {
        let error = formatError { try VolumeManifest.decode("uuid = \(Fixture.volume)\nnvm = /x\n") }
        #expect(error == .invalidField(structure: "volume manifest", field: "format", reason: "missing"))
    }

    @Test func anotherVersionIsUnsupported() {
        let error = formatError { try VolumeManifest.decode("format = 3\nuuid = \(Fixture.volume)\nnvm = /x\n") }
        #expect(error == .unsupportedVersion(structure: "volume manifest", found: 3, supported: 2))
    }

    @Test(arguments: ["one", "-1", "1.0", ""])
    func versionThatIsNotANumberIsAnError(version: String) {
        let error = formatError { try VolumeManifest.decode("format = \(version)\nuuid = \(Fixture.volume)\nnvm = /x\n") }
        #expect(error?.field == "format")
    }

    @Test func repeatedOrEmptyDeviceIsAnError() {
        let base = "format = 2\nuuid = \(Fixture.volume)\nnvm = /x\n"
        #expect(formatError { try VolumeManifest.decode(base + "nvm = /y\n") }?.field == "nvm")
        #expect(formatError { try VolumeManifest.decode(base + "ssd =\n") }?.field == "ssd")
    }
}
