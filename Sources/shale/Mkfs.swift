// shale mkfs: make a file system.

import ArgumentParser
import KernFS
import ShaleFormat
import ShaleMedia

struct Mkfs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a Shale file system.",
        discussion: """
        With only DIR, makes a working default: an NVM region in /dev/shm (RAM-backed, \
        reserved in full, 1/32 of RAM between 256 MiB and 2 GiB), and SSD and HDD tiers as \
        sparse files DIR/ssd.img (10 % of free disk) and DIR/hdd.img (25 %). DIR receives \
        the volume manifest, shale.volume, that every other command reads.

        Give real devices with --nvm, --ssd and --hdd (a file, a DAX device or a block \
        device). Sizes take binary units: 4096, 64K, 512M, 1.5G, 2GiB.

        mkfs refuses to overwrite an existing Shale file system, or any non-empty file or \
        block device, unless --force is given; it never overwrites a volume in use.
        """)

    @Argument(help: "Directory for the volume manifest and the default SSD/HDD image files (created if missing).")
    var directory: String

    @Option(help: ArgumentHelp("NVM region: a file on a DRAM-backed file system, or a DAX device.", valueName: "path"))
    var nvm: String?

    @Option(name: .customLong("nvm-size"), help: ArgumentHelp("Size of the NVM region.", valueName: "size"))
    var nvmSize: ByteSize?

    @Option(help: ArgumentHelp("SSD tier: a file or a block device.", valueName: "path"))
    var ssd: String?

    @Option(name: .customLong("ssd-size"), help: ArgumentHelp("Size of the SSD tier (default: the whole block device, or 10 % of free disk).", valueName: "size"))
    var ssdSize: ByteSize?

    @Option(help: ArgumentHelp("HDD tier: a file or a block device.", valueName: "path"))
    var hdd: String?

    @Option(name: .customLong("hdd-size"), help: ArgumentHelp("Size of the HDD tier (default: the whole block device, or 25 % of free disk).", valueName: "size"))
    var hddSize: ByteSize?

    @Flag(name: .customLong("no-ssd"), help: "Make no SSD tier.")
    var noSSD = false

    @Flag(name: .customLong("no-hdd"), help: "Make no HDD tier.")
    var noHDD = false

    @Option(name: .customLong("ssd-segment"), help: ArgumentHelp("Segment size on the SSD tier.", valueName: "size"))
    var ssdSegment = ByteSize(bytes: 8 << 20)

    @Option(name: .customLong("hdd-segment"), help: ArgumentHelp("Segment size on the HDD tier.", valueName: "size"))
    var hddSegment = ByteSize(bytes: 32 << 20)

    @Option(name: .customLong("log-regions"), help: ArgumentHelp("Operation logs: how many processes can be attached at once (1-4096).", valueName: "count"))
    var logRegions: UInt32 = 16

    @Option(name: .customLong("log-size"), help: ArgumentHelp("Size of each operation log (default: 1/64 of the NVM, 1 MiB to 64 MiB).", valueName: "size"))
    var logSize: ByteSize?

    @Option(help: ArgumentHelp("A name for the file system (up to 64 bytes).", valueName: "text"))
    var label = ""

    @Flag(help: "Overwrite an existing file system or non-empty device.")
    var force = false

    func validate() throws {
        if noSSD, ssd != nil || ssdSize != nil { throw ValidationError("--no-ssd cannot go with --ssd or --ssd-size") }
        if noHDD, hdd != nil || hddSize != nil { throw ValidationError("--no-hdd cannot go with --hdd or --hdd-size") }
    }

    func run() throws {
        var request = MkfsRequest(directory: directory)
        request.nvmPath = nvm
        request.nvmBytes = nvmSize?.bytes
        request.ssdPath = ssd
        request.ssdBytes = ssdSize?.bytes
        request.hddPath = hdd
        request.hddBytes = hddSize?.bytes
        request.withoutSSD = noSSD
        request.withoutHDD = noHDD
        request.ssdSegmentBytes = ssdSegment.bytes
        request.hddSegmentBytes = hddSegment.bytes
        request.logRegionCount = logRegions
        request.logRegionBytes = logSize?.bytes
        request.label = label
        request.force = force
        let result: MkfsResult
        do {
            result = try VolumeFiles.mkfs(request)
        } catch {
            throw Output.fail("mkfs", error.description)
        }
        let superblock = result.superblock
        Output.line("Made Shale file system \(superblock.volumeID)")
        var rows: [[String]] = []
        for device in superblock.devices.compactMap({ $0 }) {
            let how: String
            if device.tier == .nvm {
                how = result.persistence.rawValue
            } else {
                let mode = result.devices.first { $0.tier == device.tier }?.ioMode
                how = "segments of \(ByteSize.format(device.segmentBytes)), " + (mode == .direct ? "O_DIRECT" : "buffered I/O")
            }
            rows.append(["\(device.tier)", ByteSize.format(device.byteCount), device.pathHint, how])
        }
        Output.table(rows).forEach { Output.line($0) }
        let layout = superblock.layout
        Output.line("  logs: \(layout.logRegionCount) × \(ByteSize.format(layout.logRegionBytes)); "
            + "inodes: up to \(layout.inodeCapacity - 1); manifest: \(result.manifestPath)")
        Output.line("Next: shale status \(directory)")
    }
}
