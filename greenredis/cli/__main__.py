import sys

if __name__ == "__main__":
    try:
        from greenredis.cli import main
    except KeyboardInterrupt:  # Ctrl-C while importing
        sys.exit(130)
    sys.exit(main())
