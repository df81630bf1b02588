"""memo: the decision memo for firmware leadership (plots, MEMO.md, memo.html) from metrics/."""
from kws import memo


def main():
    files = memo.write_memo("metrics", "memo")
    print(f"[memo] wrote {len(files)} files to memo/: {', '.join(f.name for f in files)}", flush=True)


if __name__ == "__main__":
    main()
