// The analysis as a picture: LM layer importance (block, attention, MLP) as
// grouped bars, and the DiT's step-to-step change of attention / MLP outputs
// as two heatmaps (dark = barely changes = safe to reuse).
#include <fmt/format.h>

#include <algorithm>

#include "accel/analysis.h"

namespace evla::accel {

namespace {

std::string heat_colour(double v, double vmax) {
  const double t = vmax > 0 ? std::clamp(v / vmax, 0.0, 1.0) : 0.0;
  return fmt::format("rgb({},{},{})", int(20 + 235 * t), int(30 + 150 * t), int(90 + 40 * (1 - t)));
}

void heatmap(std::string& svg, const std::vector<std::vector<double>>& m, double x0, double y0, double cell,
             const std::string& title) {
  double vmax = 0;
  for (const auto& row : m) for (double v : row) vmax = std::max(vmax, v);
  svg += fmt::format(R"(<text x="{}" y="{}" font-size="13">{} (max {:.3f})</text>)", x0, y0 - 8, title, vmax);
  for (size_t s = 0; s < m.size(); ++s)
    for (size_t b = 0; b < m[s].size(); ++b)
      svg += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>step {} block {}: {:.4f}</title></rect>)",
                         x0 + b * cell, y0 + s * cell, cell - 1, cell - 1, heat_colour(m[s][b], vmax), s, b, m[s][b]);
  svg += fmt::format(R"(<text x="{}" y="{}" font-size="11">DiT block →</text>)", x0, y0 + m.size() * cell + 14);
  svg += fmt::format(R"svg(<text x="{}" y="{}" font-size="11" transform="rotate(-90 {} {})">denoising step →</text>)svg",
                     x0 - 6, y0 + 90, x0 - 6, y0 + 90);
}

}  // namespace

std::string analysis_svg(const AnalysisReport& r) {
  const int L = int(r.llm.size());
  const double bar_w = 8, group = 3 * bar_w + 8, left = 50, top = 40, height = 180;
  const double width = std::max(820.0, left + L * group + 40);
  double vmax = 1e-9;
  for (const auto& s : r.llm) vmax = std::max({vmax, s.block, s.attn, s.mlp});
  std::string svg = fmt::format(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif">)"
      R"(<rect width="100%" height="100%" fill="white"/>)",
      width, top + height + 60 + 260);
  svg += fmt::format(R"(<text x="{}" y="22" font-size="15">{}: layer importance 1 − cos(in, out), {} calibration samples</text>)",
                     left, r.model, r.samples);
  const char* colours[3] = {"#3b6ea5", "#e3a33b", "#5aa55a"};
  const char* names[3] = {"block", "attention", "MLP"};
  for (int k = 0; k < 3; ++k) {
    svg += fmt::format(R"(<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>)",
                       width - 110, top + 14 * k, colours[k], width - 96, top + 9 + 14 * k, names[k]);
  }
  svg += fmt::format(R"(<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/>)", left, top + height, left + L * group,
                     top + height);
  svg += fmt::format(R"(<text x="{}" y="{}" font-size="10" text-anchor="end">{:.3f}</text>)", left - 4, top + 4, vmax);
  svg += fmt::format(R"(<text x="{}" y="{}" font-size="10" text-anchor="end">0</text>)", left - 4, top + height);
  for (int l = 0; l < L; ++l) {
    const double vals[3] = {r.llm[size_t(l)].block, r.llm[size_t(l)].attn, r.llm[size_t(l)].mlp};
    for (int k = 0; k < 3; ++k) {
      const double h = height * std::max(0.0, vals[k]) / vmax;
      svg += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>layer {} {}: {:.5f}</title></rect>)",
                         left + l * group + k * bar_w, top + height - h, bar_w - 1, h, colours[k], l, names[k], vals[k]);
    }
    svg += fmt::format(R"(<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>)",
                       left + l * group + 1.5 * bar_w, top + height + 12, l);
  }
  svg += fmt::format(R"(<text x="{}" y="{}" font-size="11">language-model layer</text>)", left, top + height + 28);
  const double hy = top + height + 70;
  const double cell = 16;
  heatmap(svg, r.dit_attn_change, left, hy, cell, "DiT attention output: change vs step before");
  const double blocks = r.dit_attn_change.empty() ? 1 : r.dit_attn_change[0].size();
  heatmap(svg, r.dit_mlp_change, left + std::max(blocks * cell + 120, 400.0), hy, cell, "DiT MLP output: change vs step before");
  svg += "</svg>\n";
  return svg;
}

}  // namespace evla::accel
