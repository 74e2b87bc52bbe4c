//! The dashboard page served at `GET /`: one static HTML file whose script polls
//! `/api/members` every two seconds and redraws a table. No templates, no assets, no
//! framework; it deliberately shows only what the JSON API already exposes.

/// The page.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>piforge cluster</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.3em;margin:0 0 .2em} #sub{color:#666;margin-bottom:1em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.35em .6em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
th{background:#eee} td.tags{white-space:normal}
.alive{color:#0a7d20;font-weight:600}.suspect{color:#b36b00;font-weight:600}
.failed{color:#c0161b;font-weight:600}.left{color:#777;font-weight:600}
.bar{display:inline-block;height:.6em;background:#4a90d9;vertical-align:middle;margin-right:.4em}
.bar.hot{background:#c0161b} code{background:#f0f0f0;padding:0 .25em;border-radius:3px}
</style></head><body>
<h1>piforge cluster</h1><div id="sub">loading…</div>
<table><thead><tr><th>name</th><th>IP</th><th>port</th><th>state</th><th>phi / threshold</th>
<th>tags</th><th>uptime</th><th>last seen</th></tr></thead><tbody id="rows"></tbody></table>
<script>
function dur(s){if(s==null)return "—";s=Math.floor(s);const d=Math.floor(s/86400),h=Math.floor(s%86400/3600),m=Math.floor(s%3600/60);
return d?d+"d "+h+"h":h?h+"h "+m+"m":m?m+"m "+(s%60)+"s":s+"s";}
function esc(t){return String(t).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));}
async function refresh(){
 try{const r=await fetch("/api/members",{cache:"no-store"});const ms=await r.json();
  const rows=ms.map(m=>{const w=Math.min(60,60*m.phi/m.threshold);
   const tags=Object.entries(m.tags).map(([k,v])=>"<code>"+esc(k)+"="+esc(v)+"</code>").join(" ");
   return "<tr data-name=\""+esc(m.name)+"\"><td>"+esc(m.name)+"</td><td>"+esc(m.ip)+"</td><td>"+m.port+
   "</td><td class=\""+m.state+"\">"+m.state+"</td><td><span class=\"bar"+(m.phi>m.threshold?" hot":"")+
   "\" style=\"width:"+w+"px\"></span>"+m.phi.toFixed(2)+" / "+m.threshold+"</td><td class=\"tags\">"+tags+
   "</td><td>"+dur(m.uptime)+"</td><td>"+(m.last_seen==null?"self":dur(m.last_seen)+" ago")+"</td></tr>";});
  document.getElementById("rows").innerHTML=rows.join("");
  const alive=ms.filter(m=>m.state=="alive").length;
  document.getElementById("sub").textContent=ms.length+" members, "+alive+" alive · updated "+new Date().toLocaleTimeString();
 }catch(e){document.getElementById("sub").textContent="agent unreachable: "+e;}
}
refresh();setInterval(refresh,2000);
</script></body></html>
"#;
