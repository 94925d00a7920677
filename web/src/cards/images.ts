import { fill, h } from "../dom";
import type { Image } from "../gen/streamhandler/v1/payloads_pb.js";
import { basename, bytes } from "../format";
import { currentToken } from "../token";
import type { DataEvent, View } from "./view";

/** The daemon serves an images service's files at /images/SERVICE/FILE. */
export function imageUrl(service: string, path: string): string {
  return `/images/${encodeURIComponent(service)}/${encodeURIComponent(basename(path))}`;
}

/**
 * An image's bytes, fetched with the daemon's token (an <img> cannot send one), as a
 * URL the page may show.
 */
async function fetchImage(url: string): Promise<string> {
  const token = currentToken();
  const response = await fetch(url, {
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
  });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return URL.createObjectURL(await response.blob());
}

export class ImageView implements View {
  readonly element = h("div", { class: "images" });
  private latest: Image | undefined;
  // One <img> for the card's life: swapping its src does not reflow the card.
  private readonly img = h("img", { alt: "", decoding: "async" });
  private readonly caption = h("figcaption", {});
  /** The image asked for last, and the object URL shown, released when replaced. */
  private wanted = "";
  private shown: string | null = null;

  constructor(private readonly service: string) {
    this.img.addEventListener("error", () => this.img.classList.add("broken"));
    this.img.addEventListener("load", () => this.img.classList.remove("broken"));
  }

  update(event: DataEvent): void {
    if (event.payload.case === "image") this.latest = event.payload.value;
  }

  render(): void {
    const image = this.latest;
    if (!image) return;
    const name = basename(image.path);
    const src = imageUrl(this.service, image.path);
    if (this.wanted !== src) {
      this.wanted = src;
      // The caption below gives the file name; the alt text names what is pictured.
      this.img.alt = name.replace(/\.[^.]+$/, "");
      if (image.width > 0 && image.height > 0) {
        this.img.width = image.width;
        this.img.height = image.height;
      }
      void this.show(src);
    }
    fill(
      this.caption,
      h("span", { class: "file-name" }, name),
      h("span", {}, `${image.width}×${image.height}`),
      h("span", {}, image.mediaType),
      h("span", {}, bytes(image.sizeBytes)),
    );
    if (!this.element.firstChild) fill(this.element, h("figure", {}, this.img, this.caption));
  }

  /** Shows the image at `src` unless another was asked for meanwhile. */
  private async show(src: string): Promise<void> {
    let url: string;
    try {
      url = await fetchImage(src);
    } catch {
      if (this.wanted === src) this.img.classList.add("broken");
      return;
    }
    if (this.wanted !== src) {
      URL.revokeObjectURL(url);
      return;
    }
    if (this.shown !== null) URL.revokeObjectURL(this.shown);
    this.shown = url;
    this.img.src = url;
  }
}
