{{/*
The ingress's body limit in MiB: api.maxFileSize (the API's MAX_FILE_SIZE, the one place the
number is written) rounded up to whole MiB, plus 1 MiB for the multipart form around the file
(boundaries, part headers, option fields; the API itself allows 64 KiB of them). So an upload
the API would take always passes the controller, and one just over the limit gets the API's own
413 (a JSON body that names the limit) rather than the controller's HTML page.
Units as the API reads MAX_FILE_SIZE (stemkube_api.sizes): binary, KB = KiB = 1024 bytes;
values.schema.json has already refused anything else.
*/}}
{{- define "stemkube.ingressBodyMiB" -}}
{{- $text := .Values.api.maxFileSize | toString | trim -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $text -}}
{{- $unit := regexReplaceAll "^[0-9]+(\\.[0-9]+)?\\s*" $text "" | upper | replace "I" "" -}}
{{- $factors := dict "" 1 "B" 1 "KB" 1024 "MB" 1048576 "GB" 1073741824 "TB" 1099511627776 -}}
{{- if not (hasKey $factors $unit) -}}
{{- fail (printf "api.maxFileSize: unknown unit in %q (use B, KB, MB, GB or TB)" $text) -}}
{{- end -}}
{{- $bytes := mulf (float64 $number) (index $factors $unit) -}}
{{- add (ceil (divf $bytes 1048576) | int64) 1 -}}
{{- end -}}

{{/* The Traefik Middleware that carries the body limit (controller traefik only). */}}
{{- define "stemkube.traefikMiddleware" -}}
{{ include "stemkube.fullname" . }}-upload-limit
{{- end -}}

{{/* The annotations the chart derives for ingress.controller, before the user's own. */}}
{{- define "stemkube.ingressAnnotations" -}}
{{- $controller := .Values.ingress.controller -}}
{{- $mib := include "stemkube.ingressBodyMiB" . | int64 -}}
{{- $derived := dict -}}
{{- if eq $controller "nginx" -}}
{{- $timeout := .Values.ingress.proxyTimeoutSeconds | toString -}}
{{- $_ := set $derived "nginx.ingress.kubernetes.io/proxy-body-size" (printf "%dm" $mib) -}}
{{- $_ := set $derived "nginx.ingress.kubernetes.io/proxy-request-buffering" "off" -}}
{{- $_ := set $derived "nginx.ingress.kubernetes.io/proxy-read-timeout" $timeout -}}
{{- $_ := set $derived "nginx.ingress.kubernetes.io/proxy-send-timeout" $timeout -}}
{{- else if eq $controller "traefik" -}}
{{- $key := "traefik.ingress.kubernetes.io/router.middlewares" -}}
{{- $ours := printf "%s-%s@kubernetescrd" .Release.Namespace (include "stemkube.traefikMiddleware" .) -}}
{{- $theirs := get (.Values.ingress.annotations | default dict) $key -}}
{{- $_ := set $derived $key (ternary (printf "%s,%s" $ours $theirs) $ours (not (empty $theirs))) -}}
{{- end -}}
{{- /* A key the user sets wins, but for Traefik's middlewares, whose lists are joined above. */ -}}
{{- $merged := merge (dict) (.Values.ingress.annotations | default dict) $derived -}}
{{- if eq $controller "traefik" -}}
{{- $_ := set $merged "traefik.ingress.kubernetes.io/router.middlewares" (get $derived "traefik.ingress.kubernetes.io/router.middlewares") -}}
{{- end -}}
{{- toYaml $merged -}}
{{- end -}}
