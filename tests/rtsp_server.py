"""A GStreamer RTSP server on 127.0.0.1 for the tests and the stream benchmark: a camera that speaks RTSP.

Run with the system interpreter (Debian's python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good
and -ugly for x264enc), not the project's virtualenv:

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --path /cam [--file clip.mp4] [--transport tcp]
                                          [--user admin --password secret] [--size 1280x720 --fps 25]

It prints ``ready`` on stdout once it listens. Without ``--file`` it serves a live test pattern encoded by
x264 (key frame every ``--gop`` frames, ``--bframes`` B-frames); with ``--file`` it serves an MP4's H.264
as it is, paced at its frame rate. Every client gets its own pipeline from the first frame. The server
sends RTCP sender reports that map RTP time to the wall clock (NTP), as cameras do.
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

TRANSPORTS = {"udp": GstRtsp.RTSPLowerTrans.UDP, "tcp": GstRtsp.RTSPLowerTrans.TCP,
              "any": GstRtsp.RTSPLowerTrans.UDP | GstRtsp.RTSPLowerTrans.TCP}


def launch_line(args: argparse.Namespace) -> str:
    """The media pipeline: a file's H.264 as it is, or a live test pattern encoded on the fly."""
    if args.file:
        return f"( filesrc location=\"{args.file}\" ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    width, height = args.size.split("x")
    return (f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={args.fps}/1 "
            f"! x264enc tune=zerolatency speed-preset=ultrafast threads=1 key-int-max={args.gop} bframes={args.bframes} "
            f"b-adapt=false ! video/x-h264,profile=high ! h264parse config-interval=-1 "
            f"! rtph264pay name=pay0 pt=96 config-interval=-1 )")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--file", help="serve this MP4's H.264 stream instead of a test pattern")
    parser.add_argument("--size", default="320x240", help="test pattern size WxH")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=25, help="test pattern: frames per key frame")
    parser.add_argument("--bframes", type=int, default=0, help="test pattern: B-frames between anchors")
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="any", help="lower transports allowed")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(False)
    factory.set_protocols(TRANSPORTS[args.transport])
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role_from_structure(Gst.Structure.new_from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
